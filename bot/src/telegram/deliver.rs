//! Sends a [`Response`] through the Bot API: group replies with their keyboards, private
//! replies by direct message, the edit of a pressed message.
//!
//! A bot may only message users who have started a private chat with it. A private reply that
//! cannot be delivered is replaced by one note in the group telling that player how to fix it.

use teloxide::payloads::setters::*;
use teloxide::prelude::Requester;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId};
use teloxide::{ApiError, Bot, RequestError};
use tracing::warn;

use super::Shared;
use crate::app::{Button, Dest, Reply, Response};

/// Telegram's limit on one message's text, counted (as Telegram counts it) in UTF-16 code
/// units: an emoji outside the Basic Multilingual Plane counts 2.
const MAX_TEXT: usize = 4096;

/// Where a response goes.
pub(super) struct Target {
    /// The chat the command came from.
    pub chat: ChatId,
    /// The message whose button was pressed.
    pub pressed: Option<MessageId>,
}

pub(super) async fn deliver(
    bot: &Bot,
    shared: &Shared,
    target: &Target,
    response: &Response,
) -> Result<(), RequestError> {
    let mut unreachable: Vec<&str> = Vec::new();
    for reply in &response.replies {
        match &reply.to {
            Dest::Chat => send(bot, target.chat, reply).await?,
            Dest::Player { id, name } => match send(bot, ChatId(*id), reply).await {
                Ok(()) => {}
                Err(e) if cannot_message(&e) => {
                    if !unreachable.contains(&name.as_str()) {
                        unreachable.push(name);
                    }
                }
                Err(e) => return Err(e),
            },
        }
    }
    if !unreachable.is_empty() {
        let me = shared
            .username
            .as_deref()
            .map_or("me".to_owned(), |u| format!("@{u}"));
        let note = format!(
            "🔒 I cannot message {} privately: open a private chat with {me} and press Start, \
             then /status here shows your figures.",
            unreachable.join(", ")
        );
        bot.send_message(target.chat, note).await?;
    }
    if let (Some(edit), Some(message)) = (&response.edit, target.pressed) {
        let mut request = bot.edit_message_text(target.chat, message, &edit.text);
        if !edit.buttons.is_empty() {
            request = request.reply_markup(keyboard(&edit.buttons));
        }
        match request.await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => {}
            Err(e) => warn!(error = %e, "could not update the pressed message"),
        }
    }
    Ok(())
}

/// The user never started the bot, blocked it, or is gone.
fn cannot_message(e: &RequestError) -> bool {
    match e {
        RequestError::Api(
            ApiError::BotBlocked
            | ApiError::CantInitiateConversation
            | ApiError::UserDeactivated
            | ApiError::ChatNotFound,
        ) => true,
        RequestError::Api(ApiError::Unknown(description)) => description.starts_with("Forbidden"),
        _ => false,
    }
}

async fn send(bot: &Bot, chat: ChatId, reply: &Reply) -> Result<(), RequestError> {
    let parts = split(&reply.text, MAX_TEXT);
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let mut request = bot.send_message(chat, part);
        // The buttons go under the last part.
        if i == last && !reply.buttons.is_empty() {
            request = request.reply_markup(keyboard(&reply.buttons));
        }
        request.await?;
    }
    Ok(())
}

fn keyboard(rows: &[Vec<Button>]) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows.iter().map(|row| {
        row.iter()
            .map(|b| InlineKeyboardButton::callback(b.label.clone(), b.command.clone()))
            .collect::<Vec<_>>()
    }))
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Splits a long text at line breaks into parts of at most `max` UTF-16 code units (a single
/// longer line is cut between characters, never inside one); never returns an empty list.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    for line in text.split('\n') {
        let mut line = line;
        while utf16_len(line) > max {
            let mut units = 0;
            let cut = line
                .char_indices()
                .find(|(_, c)| {
                    units += c.len_utf16();
                    units > max
                })
                .map_or(line.len(), |(at, _)| at);
            if !part.is_empty() {
                parts.push(std::mem::take(&mut part));
            }
            parts.push(line[..cut].to_owned());
            line = &line[cut..];
        }
        if !part.is_empty() && utf16_len(&part) + 1 + utf16_len(line) > max {
            parts.push(std::mem::take(&mut part));
        }
        if !part.is_empty() {
            part.push('\n');
        }
        part.push_str(line);
    }
    if !part.is_empty() || parts.is_empty() {
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_split_at_line_breaks() {
        assert_eq!(split("short", 10), ["short"]);
        assert_eq!(split("aaaa\nbbbb\ncc", 9), ["aaaa\nbbbb", "cc"]);
        assert_eq!(split("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        let rules = crate::game::rules_text();
        let parts = split(&rules, MAX_TEXT);
        assert!(parts.iter().all(|p| utf16_len(p) <= MAX_TEXT));
        assert_eq!(parts.join("\n"), rules);
    }

    #[test]
    fn parts_are_measured_in_utf16_units_as_telegram_counts() {
        // 3000 emoji are 3000 chars but 6000 UTF-16 units: two messages, no emoji cut in half.
        let emoji = "🏆".repeat(3000);
        let parts = split(&emoji, MAX_TEXT);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_len(&parts[0]), 4096);
        assert_eq!(parts.concat(), emoji);
        // Cyrillic is one unit a letter: 4096 letters fit in one message.
        assert_eq!(split(&"щ".repeat(4096), MAX_TEXT).len(), 1);
        assert_eq!(split(&"щ".repeat(4097), MAX_TEXT).len(), 2);
        // Lines are kept whole when they fit.
        let lines = format!("{}\n{}", "a".repeat(4000), "🏆".repeat(60));
        assert_eq!(split(&lines, MAX_TEXT), ["a".repeat(4000), "🏆".repeat(60)]);
    }

    #[test]
    fn unreachable_users_are_recognised() {
        let forbidden = RequestError::Api(ApiError::Unknown(
            "Forbidden: bot can't initiate conversation with a user".into(),
        ));
        assert!(cannot_message(&forbidden));
        assert!(cannot_message(&RequestError::Api(ApiError::BotBlocked)));
        assert!(!cannot_message(&RequestError::Api(ApiError::MessageNotModified)));
    }
}
