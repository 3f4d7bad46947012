//! Properties of the key list parser (`[gateway] api_keys_env` / `api_keys_file` entries):
//! never a panic, every key given raw or by digest authenticates as its name, no other key
//! does, and no error message or `Debug` output holds a key.

mod gateway_support;

use http::HeaderMap;
use proptest::prelude::*;
use tower_llm_gateway::auth::ClientKeys;

use gateway_support::sha256_hex;

fn bearer(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {key}").parse().expect("visible ASCII"),
    );
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_hold_no_entry(text in "\\PC{0,200}") {
        for result in [ClientKeys::parse(&text), ClientKeys::parse_lines(&text)] {
            match result {
                Ok(keys) => {
                    let _ = format!("{keys:?}");
                }
                Err(e) => {
                    let message = e.to_string();
                    prop_assert!(message.starts_with("entry ") || message.starts_with("line "), "{}", message);
                }
            }
        }
    }

    #[test]
    fn every_key_authenticates_as_its_name_and_no_other_does(
        // Distinct names; keys of a distinct alphabet so no key is also a name or a digest.
        entries in proptest::collection::btree_map("[a-z][a-z0-9_.-]{0,15}", ("[A-Z0-9+/]{8,40}", any::<bool>()), 1..8),
        stranger in "[A-Z0-9+/]{8,40}",
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let entries: Vec<_> = entries.into_iter().filter(|(_, (key, _))| seen.insert(key.clone())).collect();
        let list: Vec<String> = entries
            .iter()
            .map(|(name, (key, hashed))| {
                if *hashed {
                    format!("{name}=sha256:{}", sha256_hex(key))
                } else {
                    format!("{name}={key}")
                }
            })
            .collect();
        let keys = ClientKeys::parse(&list.join(", ")).expect("valid list");
        let lines = ClientKeys::parse_lines(&list.join("\n")).expect("valid lines");
        prop_assert_eq!(keys.len(), entries.len());
        let debug = format!("{keys:?}");
        for (name, (key, _)) in &entries {
            prop_assert_eq!(keys.authenticate(&bearer(key)).map(|n| n.to_string()), Some(name.clone()));
            prop_assert_eq!(lines.authenticate(&bearer(key)).map(|n| n.to_string()), Some(name.clone()));
            prop_assert!(!debug.contains(key.as_str()));
        }
        if !seen.contains(&stranger) {
            prop_assert!(keys.authenticate(&bearer(&stranger)).is_none());
        }
    }
}
