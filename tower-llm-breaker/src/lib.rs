//! tower-llm-breaker (in progress).
