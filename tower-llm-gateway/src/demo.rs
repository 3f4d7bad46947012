//! The offline demo's traffic (`[gateway] demo_requests_per_sec`): the gateway calls itself
//! over loopback, like any client, so the status line has something to show.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::ClientKeys;

/// `rps` chat requests a second to the gateway at `addr`, mostly for `gpt-4o-mini`, every fourth
/// for `broken-model`, every fifth streamed (with the first client key, when keys are on).
pub(crate) async fn demo_traffic(addr: SocketAddr, rps: u32, keys: Arc<ClientKeys>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let period = Duration::from_secs(1) / rps.max(1);
    let mut tick = tokio::time::interval(period);
    let auth = keys
        .first()
        .and_then(|k| http::HeaderValue::from_bytes(&[b"Bearer ".as_slice(), k].concat()).ok());
    for n in 0u64.. {
        tick.tick().await;
        let model = if n % 4 == 3 {
            "broken-model"
        } else {
            "gpt-4o-mini"
        };
        let stream = n % 5 == 4;
        let body = serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{ "role": "user", "content": "Say hello." }],
        })
        .to_string();
        let mut req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &auth {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(res) = client.request(req).await {
                let _ = res.into_body().collect().await;
            }
        });
    }
}
