//! tower-llm-retry (in progress).
