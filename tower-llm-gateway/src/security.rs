//! Secure by default: whether the gateway may start unauthenticated, and what it warns about.
//!
//! | providers | client keys | `allow_unauthenticated` | listen address | start |
//! |---|---|---|---|---|
//! | any real one (`base_url`) | none | false (default) | any | **refused**, with the reason, the fix and the address |
//! | any real one | none | true | loopback | yes |
//! | any | none | any | not loopback (e.g. `0.0.0.0`) | yes, with a warning |
//! | embedded mocks only | none | any | loopback | yes (the shipped `workspace.toml`) |
//! | any | set | any | any | yes |
//!
//! ```
//! use tower_llm_gateway::security::{check_exposure, Exposure};
//!
//! let local = "127.0.0.1:8080".parse().unwrap();
//! let public = "0.0.0.0:8080".parse().unwrap();
//! let refused = check_exposure(&Exposure { real_providers: &["openai"], keys: false, allow_unauthenticated: false, listen: local })
//!     .unwrap_err();
//! assert!(refused.contains("allow_unauthenticated = true"));
//! // Allowed, on a public address: starts, with a warning.
//! let warning = check_exposure(&Exposure { real_providers: &["openai"], keys: false, allow_unauthenticated: true, listen: public })
//!     .unwrap();
//! assert!(warning.unwrap().contains("0.0.0.0:8080"));
//! // Mocks only, on loopback: nothing to say.
//! assert_eq!(check_exposure(&Exposure { real_providers: &[], keys: false, allow_unauthenticated: false, listen: local }), Ok(None));
//! ```

use std::net::SocketAddr;

/// What [`check_exposure`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Exposure<'a> {
    /// The providers that are real upstreams (a `base_url`, not an embedded `mock`).
    pub real_providers: &'a [&'a str],
    /// Whether client keys are configured.
    pub keys: bool,
    /// `[gateway] allow_unauthenticated`.
    pub allow_unauthenticated: bool,
    /// The address the gateway listens on.
    pub listen: SocketAddr,
}

/// `Err(why)` when the gateway must not start (real providers, no client keys, not allowed);
/// else `Ok(Some(warning))` when it listens on a non-loopback address without client keys, or
/// `Ok(None)`.
pub fn check_exposure(e: &Exposure<'_>) -> Result<Option<String>, String> {
    if e.keys {
        return Ok(None);
    }
    let providers = e
        .real_providers
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if !e.real_providers.is_empty() && !e.allow_unauthenticated {
        return Err(format!(
            "refusing to start: no client keys are configured, so every client that can reach \
             http://{listen} would be served by the real provider(s) {providers} with the \
             operator's API keys. Set client keys (`[gateway] api_keys_env`, `api_keys_file` or \
             `[[gateway.keys]]`), or, if {listen} is reachable only from a private network, set \
             `[gateway] allow_unauthenticated = true`",
            listen = e.listen,
        ));
    }
    if e.listen.ip().is_loopback() {
        return Ok(None);
    }
    let served = if e.real_providers.is_empty() {
        "the embedded mock providers".to_owned()
    } else {
        format!("the real provider(s) {providers}")
    };
    Ok(Some(format!(
        "listening on {}, which is not a loopback address, without client keys: every client \
         that can reach it is served by {served}. Set client keys unless this network is private",
        e.listen
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure<'a>(real: &'a [&'a str], keys: bool, allow: bool, listen: &str) -> Exposure<'a> {
        Exposure {
            real_providers: real,
            keys,
            allow_unauthenticated: allow,
            listen: listen.parse().unwrap(),
        }
    }

    #[test]
    fn the_table() {
        let refused =
            check_exposure(&exposure(&["a", "b"], false, false, "127.0.0.1:1")).unwrap_err();
        for part in [
            "`a`, `b`",
            "http://127.0.0.1:1",
            "api_keys_env",
            "allow_unauthenticated = true",
        ] {
            assert!(refused.contains(part), "{refused}");
        }
        assert_eq!(
            check_exposure(&exposure(&["a"], false, true, "127.0.0.1:1")),
            Ok(None)
        );
        assert_eq!(
            check_exposure(&exposure(&["a"], false, true, "[::1]:1")),
            Ok(None)
        );
        let warn = check_exposure(&exposure(&["a"], false, true, "0.0.0.0:1"))
            .unwrap()
            .unwrap();
        assert!(warn.contains("0.0.0.0:1") && warn.contains("`a`"), "{warn}");
        let warn = check_exposure(&exposure(&[], false, false, "10.1.2.3:1"))
            .unwrap()
            .unwrap();
        assert!(warn.contains("mock"), "{warn}");
        assert_eq!(
            check_exposure(&exposure(&[], false, false, "127.0.0.1:1")),
            Ok(None)
        );
        assert_eq!(
            check_exposure(&exposure(&["a"], true, false, "0.0.0.0:1")),
            Ok(None)
        );
    }
}
