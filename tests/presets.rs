//! Provider presets (`kind = "…"`, issue 16): each preset's default base URL, path, query and
//! credential headers, as the upstream receives them; explicit keys win; no provider's key
//! reaches another host. The real hosts (`api.openai.com`, …) are served on loopback by chaos
//! mocks over TLS, with certificates for those names from the test's CA
//! (`UpstreamClientBuilder::new(..).connect_to(host, addr)`): the TLS check itself proves the
//! client went to the preset's host.

mod tls_support;

use std::collections::BTreeMap;
use std::sync::Once;

use bytes::Bytes;
use http::Version;
use http_body_util::Full;
use tls_support::{send, TestCa};
use tower_llm::client::UpstreamClientBuilder;
use tower_llm::{StackBuilder, StackConfig};
use tower_llm_chaos::{Attempt, Fault, MockUpstream};

/// The keys the presets read by default, and one named explicitly.
const KEYS: [(&str, &str); 8] = [
    ("OPENAI_API_KEY", "sk-openai-test"),
    ("ANTHROPIC_API_KEY", "sk-ant-test"),
    ("AZURE_OPENAI_API_KEY", "azure-test"),
    ("GEMINI_API_KEY", "gemini-test"),
    ("GROQ_API_KEY", "gsk-test"),
    ("OPENROUTER_API_KEY", "sk-or-test"),
    ("MISTRAL_API_KEY", "mistral-test"),
    ("TOWER_LLM_TEST_VLLM_KEY", "vllm-test"),
];

/// Set once, before any test reads them.
fn keys() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        for (var, value) in KEYS {
            std::env::set_var(var, value);
        }
    });
}

/// Every preset on its own route (`<name>-*`), and a failover route `leak-*` over three of them.
const CONFIG: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
ca_file = "CA"

[[providers]]
name = "anthropic"
kind = "anthropic"
ca_file = "CA"

[[providers]]
name = "azure"
kind = "azure"
base_url = "https://myres.openai.azure.com"
ca_file = "CA"

[[providers]]
name = "azurev1"
kind = "azure"
base_url = "https://v1res.openai.azure.com/openai/v1"
ca_file = "CA"

[[providers]]
name = "azure2"
kind = "azure"
base_url = "https://olderres.openai.azure.com/openai"
api_version = "2024-06-01"
auth_header = "authorization"
api_key_env = "TOWER_LLM_TEST_VLLM_KEY"
ca_file = "CA"

[[providers]]
name = "gemini"
kind = "gemini"
ca_file = "CA"

[[providers]]
name = "groq"
kind = "groq"
ca_file = "CA"

[[providers]]
name = "openrouter"
kind = "openrouter"
ca_file = "CA"

[[providers]]
name = "mistral"
kind = "mistral"
ca_file = "CA"

[[providers]]
name = "vllm"
kind = "vllm"
api_key_env = "TOWER_LLM_TEST_VLLM_KEY"

[[providers]]
name = "ollama"
kind = "ollama"

[[routes]]
match = "leak-*"
targets = [{ provider = "openai", model = "o" }, { provider = "anthropic", model = "a" }, { provider = "ollama", model = "l" }]

[[routes]]
match = "openai-*"
targets = [{ provider = "openai" }]

[[routes]]
match = "anthropic-*"
targets = [{ provider = "anthropic", model = "claude-sonnet-4-5" }]

[[routes]]
match = "azure-*"
targets = [{ provider = "azure", model = "my-gpt-4o" }]

[[routes]]
match = "azurev1-*"
targets = [{ provider = "azurev1", model = "my-gpt-4o" }]

[[routes]]
match = "azure2-*"
targets = [{ provider = "azure2", model = "old deployment" }]

[[routes]]
match = "gemini-*"
targets = [{ provider = "gemini", model = "gemini-2.5-flash" }]

[[routes]]
match = "groq-*"
targets = [{ provider = "groq" }]

[[routes]]
match = "openrouter-*"
targets = [{ provider = "openrouter" }]

[[routes]]
match = "mistral-*"
targets = [{ provider = "mistral" }]

[[routes]]
match = "vllm-*"
targets = [{ provider = "vllm" }]

[[routes]]
match = "ollama-*"
targets = [{ provider = "ollama" }]
"#;

/// Provider name → the host its preset (or `base_url`) names, for the https ones.
const HOSTS: [(&str, &str); 9] = [
    ("openai", "api.openai.com"),
    ("anthropic", "api.anthropic.com"),
    ("azure", "myres.openai.azure.com"),
    ("azurev1", "v1res.openai.azure.com"),
    ("azure2", "olderres.openai.azure.com"),
    ("gemini", "generativelanguage.googleapis.com"),
    ("groq", "api.groq.com"),
    ("openrouter", "openrouter.ai"),
    ("mistral", "api.mistral.ai"),
];

struct World {
    _ca: TestCa,
    mocks: BTreeMap<&'static str, MockUpstream>,
    stack: tower_llm::Stack<Full<Bytes>, tower_llm::client::UpstreamBody>,
}

/// A mock per provider (TLS with a certificate for its host, or plain for the local ones, both
/// on `localhost`), and the stack over a client that dials each host at its mock.
async fn world() -> World {
    keys();
    let ca = TestCa::new("tower-llm presets CA");
    let config = StackConfig::from_toml_str(
        &CONFIG.replace("\"CA\"", &format!("\"{}\"", ca.ca_file_toml())),
    )
    .expect("config");
    let mut mocks = BTreeMap::new();
    let mut builder = UpstreamClientBuilder::new(&config);
    for (name, host) in HOSTS {
        let mock = MockUpstream::builder()
            .tls(ca.server(&[host]))
            .start()
            .await
            .expect("mock");
        builder = builder.connect_to(host, mock.addr());
        mocks.insert(name, mock);
    }
    // vLLM and Ollama are local and plain http: two mocks, both `localhost` by their presets,
    // told apart by port (8000 and 11434). One `localhost` override can only point at one of
    // them, so each gets its own client below.
    let vllm = MockUpstream::builder().start().await.expect("mock");
    let ollama = MockUpstream::builder().start().await.expect("mock");
    let client = builder.build().expect("client");
    let local = |addr| {
        UpstreamClientBuilder::new(&config)
            .connect_to("localhost", addr)
            .build()
            .expect("client")
    };
    let (vllm_client, ollama_client) = (local(vllm.addr()), local(ollama.addr()));
    mocks.insert("vllm", vllm);
    mocks.insert("ollama", ollama);
    // Route each request to its provider's client, by the chain's `Target` extension.
    let client = tower::service_fn(move |req: http::Request<_>| {
        let provider = req
            .extensions()
            .get::<tower_llm::core::Target>()
            .map(|t| t.provider().to_owned());
        let mut chosen = match provider.as_deref() {
            Some("vllm") => vllm_client.clone(),
            Some("ollama") => ollama_client.clone(),
            _ => client.clone(),
        };
        async move { tower::Service::call(&mut chosen, req).await }
    });
    let stack = StackBuilder::new(&config)
        .build_with_client(client)
        .expect("stack");
    World {
        _ca: ca,
        mocks,
        stack,
    }
}

/// A chat request for `model`, carrying the caller's own credentials (which must never reach
/// an upstream).
fn chat(model: &str) -> http::Request<Full<Bytes>> {
    let mut req = tls_support::chat(model, false);
    let headers = req.headers_mut();
    headers.insert("authorization", "Bearer caller-secret".parse().unwrap());
    headers.insert("x-api-key", "caller-secret".parse().unwrap());
    headers.insert("api-key", "caller-secret".parse().unwrap());
    req
}

fn header<'a>(attempt: &'a Attempt, name: &str) -> Option<&'a str> {
    attempt.headers.get(name).map(|v| v.to_str().unwrap())
}

/// Whether `attempt` carries no caller secret and, of the credential headers, exactly
/// `expected` (name, value).
fn only_credential(attempt: &Attempt, expected: Option<(&str, &str)>) {
    for name in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
        let want = expected.filter(|(n, _)| *n == name).map(|(_, v)| v);
        assert_eq!(header(attempt, name), want, "{name} at {}", attempt.path);
    }
}

async fn one(world: &World, provider: &str, model: &str) -> Attempt {
    let (status, headers, body) = send(&world.stack, chat(model)).await;
    assert_eq!(status, 200, "{provider}: {body}");
    assert!(headers["x-llm-target"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{provider}/")));
    let mut attempts = world.mocks[provider].attempts();
    assert_eq!(attempts.len(), 1, "{provider}");
    attempts.remove(0)
}

#[tokio::test]
async fn each_preset_sends_its_url_path_query_and_credentials() {
    let world = world().await;

    let a = one(&world, "openai", "openai-gpt-4o").await;
    assert_eq!(
        (a.path.as_str(), a.query.as_deref()),
        ("/v1/chat/completions", None)
    );
    only_credential(&a, Some(("authorization", "Bearer sk-openai-test")));
    // The default, `http2 = false`: HTTP/1.1 although the mock offers h2.
    assert_eq!(a.version, Version::HTTP_11);

    let a = one(&world, "anthropic", "anthropic-x").await;
    assert_eq!(a.path, "/v1/chat/completions");
    only_credential(&a, Some(("x-api-key", "sk-ant-test")));
    assert_eq!(header(&a, "anthropic-version"), Some("2023-06-01"));
    assert_eq!(a.model, "claude-sonnet-4-5");

    let a = one(&world, "azure", "azure-x").await;
    assert_eq!(a.path, "/openai/deployments/my-gpt-4o/chat/completions");
    assert_eq!(a.query.as_deref(), Some("api-version=2024-10-21"));
    only_credential(&a, Some(("api-key", "azure-test")));

    let a = one(&world, "azurev1", "azurev1-x").await;
    assert_eq!(
        (a.path.as_str(), a.query.as_deref()),
        ("/openai/v1/chat/completions", None)
    );
    only_credential(&a, Some(("api-key", "azure-test")));

    // Explicit keys win: another api-version, a Bearer key from another variable.
    let a = one(&world, "azure2", "azure2-x").await;
    assert_eq!(
        a.path,
        "/openai/deployments/old%20deployment/chat/completions"
    );
    assert_eq!(a.query.as_deref(), Some("api-version=2024-06-01"));
    only_credential(&a, Some(("authorization", "Bearer vllm-test")));

    let a = one(&world, "gemini", "gemini-x").await;
    assert_eq!(a.path, "/v1beta/openai/chat/completions");
    only_credential(&a, Some(("authorization", "Bearer gemini-test")));

    let a = one(&world, "groq", "groq-llama").await;
    assert_eq!(a.path, "/openai/v1/chat/completions");
    only_credential(&a, Some(("authorization", "Bearer gsk-test")));

    let a = one(&world, "openrouter", "openrouter-x").await;
    assert_eq!(a.path, "/api/v1/chat/completions");
    only_credential(&a, Some(("authorization", "Bearer sk-or-test")));

    let a = one(&world, "mistral", "mistral-large").await;
    assert_eq!(a.path, "/v1/chat/completions");
    only_credential(&a, Some(("authorization", "Bearer mistral-test")));

    let a = one(&world, "vllm", "vllm-llama").await;
    assert_eq!(a.path, "/v1/chat/completions");
    assert_eq!(header(&a, "host"), Some("localhost:8000"));
    only_credential(&a, Some(("authorization", "Bearer vllm-test")));

    let a = one(&world, "ollama", "ollama-llama3").await;
    assert_eq!(a.path, "/v1/chat/completions");
    assert_eq!(header(&a, "host"), Some("localhost:11434"));
    only_credential(&a, None);
}

#[tokio::test]
async fn failover_never_carries_one_providers_key_to_another_host() {
    let world = world().await;
    world.mocks["openai"].set_default_fault(Fault::status(503));
    world.mocks["anthropic"].set_default_fault(Fault::status(503));

    let (status, headers, _) = send(&world.stack, chat("leak-1")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-target"], "ollama/l");

    let openai = &world.mocks["openai"].attempts()[0];
    only_credential(openai, Some(("authorization", "Bearer sk-openai-test")));
    assert_eq!(header(openai, "anthropic-version"), None);
    let anthropic = &world.mocks["anthropic"].attempts()[0];
    only_credential(anthropic, Some(("x-api-key", "sk-ant-test")));
    let ollama = &world.mocks["ollama"].attempts()[0];
    only_credential(ollama, None);
    assert_eq!(header(ollama, "anthropic-version"), None);
    for name in ["azure", "gemini", "groq", "openrouter", "mistral", "vllm"] {
        assert_eq!(world.mocks[name].attempt_count(), 0, "{name}");
    }
}

#[test]
fn a_preset_without_its_key_stops_the_build_naming_the_variable() {
    let config = StackConfig::from_toml_str(
        r#"
[[providers]]
name = "p"
kind = "mistral"
api_key_env = "TOWER_LLM_TEST_UNSET_KEY"

[[routes]]
match = "*"
targets = [{ provider = "p" }]
"#,
    )
    .expect("config");
    let err = StackBuilder::new(&config)
        .build_http::<Full<Bytes>>()
        .expect_err("the key is not set");
    assert_eq!(err.key(), "providers[0].api_key_env");
    assert!(
        err.to_string().contains("TOWER_LLM_TEST_UNSET_KEY"),
        "{err}"
    );
}

/// The configuration blocks of README's "Use real providers" parse and validate as written.
#[test]
fn readme_provider_blocks_are_valid() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Use real providers")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README section");
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(!blocks.is_empty());
    for block in blocks {
        let config = StackConfig::from_toml_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(!config.providers.is_empty());
    }
}
