//! The OTLP exporter (feature `otlp`): `tracing-opentelemetry` over an OTLP/HTTP protobuf
//! exporter, the W3C trace context in and out, and [`GenAiRollup`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tower_llm::core::BoxError;
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{TelemetrySection, REQUEST_SPAN};
use tower_llm::fallback::trace::ATTEMPT_SPAN;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP trace exporter of `[telemetry]`: a tracer provider with a batch span processor
/// posting to the collector. [`layer`](Self::layer) is what a subscriber adds;
/// [`shutdown`](Self::shutdown) sends the spans still held.
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// use tower_llm_gateway::telemetry::{OtlpTraces, TelemetrySection};
///
/// # #[tokio::main] async fn main() {
/// let mut section = TelemetrySection::default();
/// section.otlp_endpoint = Some("http://127.0.0.1:4318".into());
/// let traces = OtlpTraces::start(&section).unwrap().expect("an endpoint is set");
/// tracing_subscriber::registry().with(traces.layer()).init();
/// // ... serve ...
/// traces.shutdown().await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct OtlpTraces {
    provider: SdkTracerProvider,
}

impl fmt::Debug for OtlpTraces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpTraces").finish_non_exhaustive()
    }
}

impl OtlpTraces {
    /// Build the exporter `section` configures (`None` when `otlp_endpoint` is unset). Must run
    /// inside a tokio runtime: exports are sent from it.
    pub fn start(section: &TelemetrySection) -> Result<Option<Self>, BoxError> {
        if let Err((key, why)) = section.check() {
            return Err(format!("{key}: {why}").into());
        }
        let Some(endpoint) = section.traces_endpoint() else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the OTLP exporter needs a tokio runtime")?;
        let client = OnRuntime {
            runtime,
            client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(section.export_interval_ms))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                section.sampling_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(section.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Some(OtlpTraces { provider }))
    }

    /// The subscriber layer: the request and attempt spans (and nothing else) to
    /// OpenTelemetry, with [`GenAiRollup`].
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("tower-llm-gateway");
        let spans = Targets::new()
            .with_target(super::REQUEST_TARGET, Level::INFO)
            .with_target(tower_llm::fallback::trace::ATTEMPT_TARGET, Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .and_then(GenAiRollup)
            .with_filter(spans)
    }

    /// Send the finished spans now (waits for the export).
    pub async fn flush(&self) -> Result<(), BoxError> {
        let provider = self.provider.clone();
        // The processor's thread waits for an export sent from this runtime: block elsewhere.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await?
            .map_err(Into::into)
    }

    /// Send the spans still held and stop the exporter.
    pub async fn shutdown(self) -> Result<(), BoxError> {
        let provider = self.provider;
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await?
            .map_err(Into::into)
    }
}

/// The hyper client, run on the gateway's runtime: the batch processor exports from its own
/// thread, where hyper has no reactor.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: HyperClient,
}

impl HttpClient for OnRuntime {
    fn send_bytes<'s, 'f>(
        &'s self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'f>>
    where
        's: 'f,
        Self: 'f,
    {
        let client = self.client.clone();
        let task = self
            .runtime
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move { task.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}

/// Copies what the answering attempt learns (`gen_ai.response.model`, `gen_ai.usage.*`) from
/// an `llm.attempt` span to its parent `gateway.request` span, so the request's span carries
/// the tokens it cost. Part of [`OtlpTraces::layer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GenAiRollup;

const ROLLED_UP: [&str; 3] = [
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
];

/// The rolled-up fields of one record.
#[derive(Default)]
struct Found {
    model: Option<String>,
    input: Option<i64>,
    output: Option<i64>,
}

impl tracing::field::Visit for Found {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == ROLLED_UP[0] {
            self.model = Some(value.to_owned());
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        match field.name() {
            name if name == ROLLED_UP[1] => self.input = Some(value),
            name if name == ROLLED_UP[2] => self.output = Some(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn fmt::Debug) {}
}

impl<S> Layer<S> for GenAiRollup
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {}

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.name() != ATTEMPT_SPAN {
            return;
        }
        let Some(parent) = span.parent().filter(|p| p.name() == REQUEST_SPAN) else {
            return;
        };
        let mut found = Found::default();
        values.record(&mut found);
        let fields = parent.metadata().fields();
        let parent_id = parent.id();
        drop(parent);
        drop(span);
        let record = |name: &str, value: &dyn tracing::Value| {
            if let Some(field) = fields.field(name) {
                let values = [(&field, Some(value))];
                let set = fields.value_set(&values);
                tracing::dispatcher::get_default(|d| d.record(&parent_id, &Record::new(&set)));
            }
        };
        if let Some(model) = &found.model {
            record(ROLLED_UP[0], &model.as_str());
        }
        if let Some(input) = found.input {
            record(ROLLED_UP[1], &input);
        }
        if let Some(output) = found.output {
            record(ROLLED_UP[2], &output);
        }
    }
}

/// Make `span` a child of the client's trace context (`traceparent`, `tracestate`), if any.
pub(super) fn continue_trace(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(context);
}

/// Set `traceparent` (and `tracestate`) to the current span's context, replacing any.
pub(super) fn inject(headers: &mut HeaderMap) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
