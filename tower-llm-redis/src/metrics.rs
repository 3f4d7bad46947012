//! The metrics of the shared state (all prefixed `tower_llm_redis_`).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_llm_redis_up` | gauge | | 1 while state is shared (subscribed, last operation succeeded), else 0 |
//! | `tower_llm_redis_local_decisions_total` | counter | `reason` (`redis_down`, `timeout`, `queue_full`) | decisions taken on local state because Redis failed or was slow |
//! | `tower_llm_redis_errors_total` | counter | | Redis operations that failed or timed out |
//! | `tower_llm_redis_dropped_total` | counter | | operations dropped because the writer's queue was full |
//! | `tower_llm_redis_applied_total` | counter | `component` (`cooldown`, `breaker`) | events of other replicas applied to local state |

/// 1 while state is shared, else 0.
pub const UP: &str = "tower_llm_redis_up";
/// Decisions taken on local state because Redis failed or was slow, by `reason`.
pub const LOCAL_DECISIONS_TOTAL: &str = "tower_llm_redis_local_decisions_total";
/// Redis operations that failed or timed out.
pub const ERRORS_TOTAL: &str = "tower_llm_redis_errors_total";
/// Operations dropped because the writer's queue was full.
pub const DROPPED_TOTAL: &str = "tower_llm_redis_dropped_total";
/// Events of other replicas applied to local state, by `component`.
pub const APPLIED_TOTAL: &str = "tower_llm_redis_applied_total";
/// The label of [`LOCAL_DECISIONS_TOTAL`].
pub const REASON: &str = "reason";
/// The label of [`APPLIED_TOTAL`].
pub const COMPONENT: &str = "component";

/// Every metric name above.
pub const ALL: [&str; 5] = [
    UP,
    LOCAL_DECISIONS_TOTAL,
    ERRORS_TOTAL,
    DROPPED_TOTAL,
    APPLIED_TOTAL,
];
