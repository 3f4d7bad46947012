//! Test data for the plain-chunk scan: streamed events' data, mostly shaped like OpenAI chat
//! completion chunks (keys in any order, repeated, of other types; escapes, unicode, nesting),
//! some cut short or with a byte put in. (tower-llm-fallback's resume tests include this file too.)

use proptest::prelude::*;

/// A JSON string token: plain, with unicode, with escapes, or from arbitrary text.
fn string() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => "[a-z ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => Just("\"é😀\"".to_owned()),
        1 => Just(r#""a\nb""#.to_owned()),
        1 => Just(r#""\u00e9\"""#.to_owned()),
        1 => Just("\"\"".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1.5",
            "-0.25",
            "1e3",
            "01",
            "-0",
            "1.",
            "7",
            "18446744073709551615",
            "18446744073709551616",
            "nul",
        ])
        .prop_map(str::to_owned),
        string(),
    ]
}

/// Any JSON value, nested.
fn value() -> impl Strategy<Value = String> + Clone {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((string(), inner), 0..4).prop_map(|m| {
                let m: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", m.join(","))
            }),
        ]
    })
}

fn ws() -> impl Strategy<Value = &'static str> + Clone {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t ", "\r\n", "\x0c"])
}

/// An object of `members` drawn from `key` / value pairs, in any order, keys maybe repeated.
fn object(
    member: impl Strategy<Value = (String, String)> + Clone,
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = String> + Clone {
    prop::collection::vec((member, ws(), ws()), len).prop_map(|m| {
        let m: Vec<String> = m
            .into_iter()
            .map(|((k, v), a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
            .collect();
        format!("{{{}}}", m.join(","))
    })
}

fn str_or_null() -> impl Strategy<Value = String> + Clone {
    prop_oneof![4 => string(), 2 => Just("null".to_owned()), 1 => value()]
}

fn delta() -> impl Strategy<Value = String> + Clone {
    let member = prop_oneof![
        (Just("content".to_owned()), str_or_null()),
        (
            prop::sample::select(vec![
                "role",
                "content",
                "tool_calls",
                "function_call",
                "audio",
                "refusal",
                "reasoning_content",
                "reasoning",
                "other",
                "con\\u0074ent",
            ])
            .prop_map(str::to_owned),
            prop_oneof![str_or_null(), value()],
        ),
    ];
    prop_oneof![6 => object(member, 0..4), 1 => value()]
}

fn choice() -> impl Strategy<Value = String> + Clone {
    let member = prop_oneof![
        (
            Just("index".to_owned()),
            prop_oneof![Just("0".to_owned()), scalar()]
        ),
        (Just("delta".to_owned()), delta()),
        (Just("finish_reason".to_owned()), str_or_null()),
        (
            prop::sample::select(vec!["logprobs", "finishReason", "text", "index"])
                .prop_map(str::to_owned),
            value()
        ),
    ];
    prop_oneof![8 => object(member, 0..5), 1 => value()]
}

/// A string without escapes (some unicode).
fn plain_string() -> impl Strategy<Value = String> + Clone {
    "[a-zA-Z0-9 ,.éü😀]{0,12}".prop_map(|s| format!("\"{s}\""))
}

/// `key` with a value of `value`, or no such member.
fn opt(
    key: &'static str,
    value: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<Option<(String, String)>> {
    prop::option::of(value.prop_map(move |v| (key.to_owned(), v))).boxed()
}

/// An object of the members that `members` gives, in any order, each at most once.
fn plain_object(
    members: Vec<BoxedStrategy<Option<(String, String)>>>,
) -> impl Strategy<Value = String> + Clone {
    members.prop_shuffle().prop_map(|m| {
        let m: Vec<String> = m
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", m.join(","))
    })
}

fn lit(s: &'static str) -> BoxedStrategy<String> {
    Just(s.to_owned()).boxed()
}

/// A well-formed OpenAI chunk, as providers send them (fields in any order, some left out).
fn plain_chunk() -> impl Strategy<Value = String> + Clone {
    let delta = plain_object(vec![
        opt("role", lit("\"assistant\"")),
        opt(
            "content",
            prop_oneof![3 => plain_string().boxed(), 1 => lit("null")],
        ),
        opt("refusal", prop_oneof![lit("null"), plain_string().boxed()]),
        opt(
            "tool_calls",
            prop_oneof![lit("null"), lit("[{\"index\":0}]")],
        ),
        opt(
            "reasoning_content",
            prop_oneof![lit("null"), plain_string().boxed()],
        ),
    ]);
    let choice = plain_object(vec![
        opt("index", prop_oneof![lit("0"), lit("1"), lit("null")]),
        opt("delta", prop_oneof![4 => delta.boxed(), 1 => lit("null")]),
        opt(
            "logprobs",
            prop_oneof![3 => lit("null"), 1 => lit("{\"content\":[]}")],
        ),
        opt(
            "finish_reason",
            prop_oneof![
                lit("null"),
                lit("\"stop\""),
                lit("\"\""),
                plain_string().boxed()
            ],
        ),
    ]);
    let choices = prop::collection::vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(",")));
    plain_object(vec![
        opt(
            "id",
            prop_oneof![3 => plain_string().boxed(), 1 => lit("null")],
        ),
        opt("object", lit("\"chat.completion.chunk\"")),
        opt("created", lit("1700000000")),
        opt("model", plain_string()),
        choices
            .prop_map(|c| Some(("choices".to_owned(), c)))
            .boxed(),
        opt(
            "usage",
            prop_oneof![lit("null"), lit("{\"prompt_tokens\":3,\"total_tokens\":5}")],
        ),
    ])
}

/// A streamed event's data: mostly chunk-shaped objects, some mangled.
pub(crate) fn chunk_data() -> impl Strategy<Value = Vec<u8>> {
    let choices = prop_oneof![
        8 => prop::collection::vec(choice(), 0..3).prop_map(|c| format!("[{}]", c.join(","))),
        1 => value(),
    ];
    let member = prop_oneof![
        4 => (Just("choices".to_owned()), choices),
        2 => (Just("id".to_owned()), str_or_null()),
        2 => (
            prop::sample::select(vec!["object", "model", "created", "system_fingerprint"])
                .prop_map(str::to_owned),
            scalar()
        ),
        1 => (
            prop::sample::select(vec![
                "usage", "error", "type", "delta", "candidates", "usageMetadata", "x_groq",
                "id",
            ])
            .prop_map(str::to_owned),
            value()
        ),
    ];
    let wild = (ws(), object(member, 0..6), ws()).prop_map(|(a, o, b)| format!("{a}{o}{b}"));
    let whole = prop_oneof![wild, plain_chunk()];
    prop_oneof![
        6 => whole.clone().prop_map(String::into_bytes),
        // Cut short.
        1 => (whole.clone(), any::<prop::sample::Index>()).prop_map(|(s, i)| {
            let mut b = s.into_bytes();
            b.truncate(i.index(b.len() + 1));
            b
        }),
        // A byte (maybe not UTF-8) or a character put in anywhere.
        1 => (whole, any::<prop::sample::Index>(), prop_oneof![
            Just(vec![0xff]),
            Just(vec![0]),
            Just(b"\\".to_vec()),
            any::<char>().prop_map(|c| c.to_string().into_bytes()),
            prop::sample::select(vec!["\"", ",", "}", "]", "{", "[", ":", "e", "1", " "])
                .prop_map(|s| s.as_bytes().to_vec()),
        ]).prop_map(|(s, i, put)| {
            let mut b = s.into_bytes();
            let at = i.index(b.len() + 1);
            b.splice(at..at, put);
            b
        }),
    ]
}
