//! The runner shared by every `fuzz_*.rs` harness of the workspace (each crate's harnesses
//! include this file with `#[path]`), on proptest: generators with shrinking, on the stable
//! toolchain, under `cargo test`. See `FUZZING.md` at the root.
//!
//! Settings, from the environment (read once per property):
//!
//! - `TOWER_LLM_FUZZ_CASES`: cases per property, or per batch when a time budget is set
//!   (default: each property's own small count, so `cargo test --workspace` stays fast);
//! - `TOWER_LLM_FUZZ_SECS`: run each property in batches until this many seconds have passed
//!   (the long run; unset: one batch);
//! - `TOWER_LLM_FUZZ_SEED`: the seed of the first batch, a number or `random` (default: a fixed
//!   seed, so CI runs the same cases every time). Batch `i` uses seed + `i`.
//!
//! Every property prints (shown with `--nocapture`) how many cases it ran and the seed it
//! started from. A failure panics with the shrunk input and the command that replays the
//! failing batch: `TOWER_LLM_FUZZ_SEED=<batch seed> TOWER_LLM_FUZZ_CASES=<batch size>`.

#![allow(dead_code)] // each harness uses a part of it

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner};

/// The seed CI uses when `TOWER_LLM_FUZZ_SEED` is not set.
pub const DEFAULT_SEED: u64 = 0x7077_6572_6c6c_6d31;

/// How one property runs, from the environment.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Cases per batch.
    pub cases: u32,
    /// Keep running batches until this much time has passed (`None`: one batch).
    pub time: Option<Duration>,
    /// Seed of the first batch.
    pub seed: u64,
    /// Whether the seed was drawn at random (`TOWER_LLM_FUZZ_SEED=random`).
    pub random_seed: bool,
}

impl Budget {
    /// The settings from the environment, `default_cases` per batch unless
    /// `TOWER_LLM_FUZZ_CASES` says otherwise.
    pub fn from_env(default_cases: u32) -> Budget {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let cases = var("TOWER_LLM_FUZZ_CASES")
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| panic!("TOWER_LLM_FUZZ_CASES=`{v}`: expected a number > 0"))
            })
            .unwrap_or(default_cases);
        let time = var("TOWER_LLM_FUZZ_SECS").map(|v| {
            let secs = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e7)
                .unwrap_or_else(|| panic!("TOWER_LLM_FUZZ_SECS=`{v}`: expected seconds > 0"));
            Duration::from_secs_f64(secs)
        });
        let (seed, random_seed) = match var("TOWER_LLM_FUZZ_SEED") {
            None => (DEFAULT_SEED, false),
            Some(v) if v.trim() == "random" => (random_seed(), true),
            Some(v) => (
                v.trim().parse::<u64>().unwrap_or_else(|_| {
                    panic!("TOWER_LLM_FUZZ_SEED=`{v}`: expected a number or `random`")
                }),
                false,
            ),
        };
        Budget {
            cases,
            time,
            seed,
            random_seed,
        }
    }
}

/// A seed from the clock and the process id (no extra dependency; it is printed, so a failure
/// found with it can be replayed).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()).rotate_left(32))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Run property `name`: `test` on values of the strategy `strategy()` builds, `default_cases` cases (or what the
/// environment says, see the module docs). Panics on the first failing case, after shrinking it,
/// with the input and how to replay it; a panic inside `test` is a failing case too.
///
/// The property runs on a thread of its own with a 64 MiB stack: composed generators (nested
/// `prop_oneof!`, recursive JSON) build deep value trees that overflow a test thread's 2 MiB in
/// unoptimised builds.
pub fn fuzz<S>(
    name: &str,
    default_cases: u32,
    strategy: impl FnOnce() -> S + Send,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send,
) where
    S: Strategy,
    S::Value: Debug,
{
    std::thread::scope(|scope| {
        let runner = std::thread::Builder::new()
            .name(format!("fuzz {name}"))
            .stack_size(64 << 20)
            .spawn_scoped(scope, || run(name, default_cases, strategy(), test))
            .expect("spawn the fuzz thread");
        if let Err(panic) = runner.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

fn run<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let budget = Budget::from_env(default_cases);
    let started = Instant::now();
    let mut batch: u64 = 0;
    loop {
        let seed = budget.seed.wrapping_add(batch);
        let config = Config {
            cases: budget.cases,
            // XorShift: ChaCha dominates run time in unoptimised test builds.
            rng_algorithm: RngAlgorithm::XorShift,
            rng_seed: RngSeed::Fixed(seed),
            // Replays go through the seed, not through files next to the sources.
            failure_persistence: None,
            // Shrinking a slow case (a request through the gateway) must end in bounded time.
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => panic!(
                "fuzz {name}: a failing case in batch {batch} (after {} passing batches of {}): {reason}\n\
                 minimal input: {input:#?}\n\
                 replay: TOWER_LLM_FUZZ_SEED={seed} TOWER_LLM_FUZZ_CASES={} cargo test ... {name}",
                batch,
                budget.cases,
                budget.cases,
            ),
            Err(TestError::Abort(reason)) => {
                panic!("fuzz {name}: aborted ({reason}), seed {seed}")
            }
        }
        batch += 1;
        match budget.time {
            Some(time) if started.elapsed() < time => continue,
            _ => break,
        }
    }
    println!(
        "fuzz {name}: {} cases in {:.1} s, {batch} batch(es) from seed {}{}",
        u64::from(budget.cases) * batch,
        started.elapsed().as_secs_f64(),
        budget.seed,
        if budget.random_seed { " (random)" } else { "" },
    );
}
