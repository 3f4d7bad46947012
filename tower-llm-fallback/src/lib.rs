//! tower-llm-fallback (in progress).
