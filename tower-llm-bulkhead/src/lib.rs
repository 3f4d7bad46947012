//! tower-llm-bulkhead (in progress).
