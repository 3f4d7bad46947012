//! tower-llm-chaos (in progress).
