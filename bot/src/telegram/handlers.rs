//! Telegram updates → [`App::handle`]. A message and a button press go the same way: a button's
//! callback data is the command text its presser would have typed.

use teloxide::payloads::setters::*;
use teloxide::prelude::{Requester, Update};
use teloxide::types::{CallbackQuery, Chat, Message, User};
use teloxide::{Bot, RequestError};
use tracing::{Instrument, error, info_span};

use super::Shared;
use super::deliver::{Target, deliver};
use crate::app::{ChatKind, Incoming};
use crate::game::Actor;
use crate::store::Origin;

const INTERNAL_ERROR: &str = "⚠️ Something went wrong on our side; please try again in a moment.";

fn chat_kind(chat: &Chat) -> Option<ChatKind> {
    if chat.is_private() {
        Some(ChatKind::Private)
    } else if chat.is_group() || chat.is_supergroup() {
        Some(ChatKind::Group)
    } else {
        None
    }
}

fn actor(user: &User) -> Actor {
    Actor {
        id: user.id.0 as i64,
        name: user.first_name.clone(),
        username: user.username.clone(),
    }
}

fn origin(update: &Update) -> Origin {
    Origin {
        source: "telegram",
        update_id: Some(i64::from(update.id.0)),
    }
}

pub(super) async fn on_message(
    bot: Bot,
    shared: Shared,
    update: Update,
    msg: Message,
) -> Result<(), RequestError> {
    let (Some(text), Some(user), Some(kind)) = (msg.text(), msg.from.as_ref(), chat_kind(&msg.chat)) else {
        return Ok(());
    };
    if user.is_bot {
        return Ok(());
    }
    let span = info_span!(
        "telegram",
        update_id = update.id.0,
        chat_id = msg.chat.id.0,
        user = user.id.0
    );
    async {
        let incoming = Incoming {
            chat_id: msg.chat.id.0,
            chat_kind: kind,
            actor: actor(user),
            text,
            origin: origin(&update),
            via_button: false,
        };
        let target = Target {
            chat: msg.chat.id,
            pressed: None,
        };
        match shared.app.handle(incoming).await {
            Ok(Some(response)) => deliver(&bot, &shared, &target, &response).await,
            Ok(None) => Ok(()),
            Err(e) => {
                error!(error = %e, "command failed");
                bot.send_message(msg.chat.id, INTERNAL_ERROR).await.map(drop)
            }
        }
    }
    .instrument(span)
    .await
}

pub(super) async fn on_callback(
    bot: Bot,
    shared: Shared,
    update: Update,
    q: CallbackQuery,
) -> Result<(), RequestError> {
    let span = info_span!("telegram", update_id = update.id.0, user = q.from.id.0);
    async {
        let chat = q.message.as_ref().map(|m| (m.chat().clone(), m.id()));
        let (Some(data), Some((chat, message_id)), Some(kind)) = (
            q.data.as_deref(),
            chat,
            q.message.as_ref().and_then(|m| chat_kind(m.chat())),
        ) else {
            // A button of a message Telegram no longer shows us: nothing to act on.
            bot.answer_callback_query(q.id.clone())
                .text("This button has expired.")
                .await?;
            return Ok(());
        };
        let incoming = Incoming {
            chat_id: chat.id.0,
            chat_kind: kind,
            actor: actor(&q.from),
            text: data,
            origin: origin(&update),
            via_button: true,
        };
        let target = Target {
            chat: chat.id,
            pressed: Some(message_id),
        };
        let (delivered, notice) = match shared.app.handle(incoming).await {
            Ok(Some(response)) => (
                deliver(&bot, &shared, &target, &response).await,
                response.notice.clone(),
            ),
            Ok(None) => (Ok(()), Some("This button does nothing.".to_owned())),
            Err(e) => {
                error!(error = %e, "button command failed");
                (Ok(()), Some(INTERNAL_ERROR.to_owned()))
            }
        };
        // Always answered, so the button stops spinning on the presser's screen.
        let mut answer = bot.answer_callback_query(q.id.clone());
        if let Some(text) = notice {
            answer = answer.text(text);
        }
        answer.await?;
        delivered
    }
    .instrument(span)
    .await
}
