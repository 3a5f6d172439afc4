//! A fake Telegram Bot API on 127.0.0.1 for the adapter's tests: it serves scripted updates
//! (messages and button presses) through getUpdates, answers the methods the bot calls like
//! Telegram would, and records every call.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const BOT_ID: i64 = 999;
pub const BOT_USERNAME: &str = "nemo_test_bot";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// The message id the fake gave a sent message.
    pub message_id: Option<i64>,
}

impl Call {
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }

    pub fn chat(&self) -> i64 {
        self.body["chat_id"].as_i64().unwrap_or_default()
    }

    /// Callback data of every button under the message.
    pub fn buttons(&self) -> Vec<String> {
        self.body["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    /// Every update ever queued; `served` of them were handed out.
    updates: Vec<Value>,
    served: usize,
    calls: Vec<Call>,
    next_message_id: i64,
    next_update_id: i64,
    /// Users who never started a private chat with the bot.
    dm_closed: HashSet<i64>,
}

#[derive(Clone)]
pub struct FakeBotApi {
    inner: Arc<Mutex<Inner>>,
    queued: Arc<Notify>,
    pub addr: SocketAddr,
}

#[derive(Clone)]
pub struct User {
    pub id: i64,
    pub name: &'static str,
}

impl User {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "is_bot": false, "first_name": self.name, "username": self.name.to_lowercase()})
    }
}

fn chat_json(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "group", "title": "World Council"})
    } else {
        json!({"id": id, "type": "private", "first_name": "Someone"})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "NeMonopolia", "username": BOT_USERNAME})
}

impl FakeBotApi {
    pub async fn start(dm_closed: &[i64]) -> Self {
        let inner = Inner {
            next_message_id: 1,
            next_update_id: 1,
            dm_closed: dm_closed.iter().copied().collect(),
            ..Inner::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            inner: Arc::new(Mutex::new(inner)),
            queued: Arc::new(Notify::new()),
            addr,
        };
        let app = Router::new()
            .route("/{bot}/{method}", post(api))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn queue(&self, make: impl FnOnce(i64) -> Value) -> i64 {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.next_update_id;
        inner.next_update_id += 1;
        inner.updates.push(make(id));
        drop(inner);
        self.queued.notify_waiters();
        id
    }

    /// `from` types `text` in `chat`; returns the update id.
    pub fn message(&self, from: &User, chat: i64, text: &str) -> i64 {
        let command_len = text.split_whitespace().next().unwrap_or_default().len();
        self.queue(|id| {
            json!({"update_id": id, "message": {
                "message_id": 10_000 + id, "date": 1_700_000_000, "chat": chat_json(chat), "from": from.json(),
                "text": text, "entities": [{"type": "bot_command", "offset": 0, "length": command_len}],
            }})
        })
    }

    /// `from` presses the button `data` under the bot's message `message_id`.
    pub fn press(&self, from: &User, chat: i64, message_id: i64, data: &str) -> i64 {
        self.queue(|id| {
            json!({"update_id": id, "callback_query": {
                "id": format!("cb{id}"), "from": from.json(), "chat_instance": "ci", "data": data,
                "message": {"message_id": message_id, "date": 1_700_000_000, "chat": chat_json(chat),
                            "from": bot_user(), "text": "…"},
            }})
        })
    }

    /// Serves an already served update again, as Telegram does when the bot died before
    /// confirming it.
    pub fn redeliver(&self, update_id: i64) {
        let mut inner = self.inner.lock().unwrap();
        let update = inner
            .updates
            .iter()
            .find(|u| u["update_id"] == update_id)
            .cloned()
            .expect("a known update");
        inner.updates.push(update);
        drop(inner);
        self.queued.notify_waiters();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Waits until a call after the first `from` calls satisfies `pred`; returns its index.
    pub async fn wait_for(&self, from: usize, what: &str, pred: impl Fn(&Call) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.calls().iter().skip(from).position(&pred) {
                return from + i;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self
                    .calls()
                    .iter()
                    .skip(from)
                    .map(|c| format!("{} {}", c.method, c.body))
                    .collect();
                panic!("timed out waiting for {what}; calls since:\n{}", seen.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a sendMessage to `chat` whose text contains `needle`.
    pub async fn wait_text(&self, from: usize, chat: i64, needle: &str) -> Call {
        let i = self
            .wait_for(from, needle, |c| {
                c.method == "sendMessage" && c.chat() == chat && c.text().contains(needle)
            })
            .await;
        self.calls()[i].clone()
    }

    async fn next_updates(&self) -> Vec<Value> {
        // Long polling, kept short so the bot shuts down quickly.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let notified = self.queued.notified();
            {
                let mut inner = self.inner.lock().unwrap();
                if inner.served < inner.updates.len() {
                    let fresh = inner.updates[inner.served..].to_vec();
                    inner.served = inner.updates.len();
                    return fresh;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn api(
    State(fake): State<FakeBotApi>,
    Path((_bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Bot API method names are case-insensitive (teloxide sends `GetMe`): record them as documented.
    let mut chars = method.chars();
    let method: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    if method == "getUpdates" {
        let updates = fake.next_updates().await;
        return reply(StatusCode::OK, json!({"ok": true, "result": updates}));
    }
    let mut inner = fake.inner.lock().unwrap();
    let mut call = Call {
        method: method.clone(),
        body: body.clone(),
        message_id: None,
    };
    let result = match method.as_str() {
        "getMe" => json!({
            "id": BOT_ID, "is_bot": true, "first_name": "NeMonopolia", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
            "has_main_web_app": false,
        }),
        "getWebhookInfo" => json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}),
        "deleteWebhook" | "setMyCommands" | "answerCallbackQuery" => json!(true),
        "sendMessage" | "editMessageText" => {
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            if method == "sendMessage" && inner.dm_closed.contains(&chat) {
                inner.calls.push(call);
                return reply(
                    StatusCode::FORBIDDEN,
                    json!({"ok": false, "error_code": 403,
                           "description": "Forbidden: bot can't initiate conversation with a user"}),
                );
            }
            let id = match body["message_id"].as_i64() {
                Some(id) => id,
                None => {
                    inner.next_message_id += 1;
                    inner.next_message_id
                }
            };
            call.message_id = Some(id);
            let mut message = json!({
                "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat), "from": bot_user(),
                "text": body["text"],
            });
            if !body["reply_markup"].is_null() {
                message["reply_markup"] = body["reply_markup"].clone();
            }
            message
        }
        _ => {
            inner.calls.push(call);
            return reply(
                StatusCode::NOT_FOUND,
                json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}),
            );
        }
    };
    inner.calls.push(call);
    reply(StatusCode::OK, json!({"ok": true, "result": result}))
}
