//! The offline demo's traffic (`[gateway] demo_requests_per_sec`): the gateway calls itself
//! over loopback, like any client, so the status line has something to show.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The time between two demo requests at `rps` a second: never zero (a zero period would panic
/// `tokio::time::interval`), at least a microsecond, whatever `rps` is.
pub(crate) fn period(rps: u32) -> Duration {
    (Duration::from_secs(1) / rps.max(1)).max(Duration::from_micros(1))
}

/// `rps` chat requests a second to the gateway at `addr`, mostly for `gpt-4o-mini`, every fourth
/// for `broken-model`, every fifth streamed (with `key`: the first client key given raw, when
/// keys are on).
pub(crate) async fn demo_traffic(addr: SocketAddr, rps: u32, key: Option<String>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut tick = tokio::time::interval(period(rps));
    let auth = key.and_then(|k| http::HeaderValue::from_str(&format!("Bearer {k}")).ok());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_period_is_never_zero() {
        assert_eq!(period(0), Duration::from_secs(1));
        assert_eq!(period(4), Duration::from_millis(250));
        // Above 1e9 a second, 1 s / rps is zero nanoseconds: `interval` would panic.
        for rps in [1_000_000_001, u32::MAX] {
            assert_eq!(period(rps), Duration::from_micros(1));
            drop(tokio::time::interval(period(rps)));
        }
    }
}
