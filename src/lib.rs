//! tower-llm (in progress)
