//! The queue of projects to sync, read from the database a page at a time as the sync takes
//! projects from it (failed ones first): a first full sync queues every project upstream has,
//! and memory must not grow with that.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::lock;
use crate::state::{State, StateError, Todo, TodoCursor};

/// Projects read per database query.
pub const PAGE: usize = 1000;

/// The queue as a stream. A database error ends the stream and is left in `error`.
pub fn stream(
    state: Arc<Mutex<State>>,
    error: Arc<Mutex<Option<StateError>>>,
) -> impl futures::Stream<Item = Todo> {
    futures::stream::unfold(Some(TodoCursor::default()), move |cursor| {
        let (state, error) = (state.clone(), error.clone());
        async move {
            let mut cursor = cursor?;
            let page = tokio::task::spawn_blocking(move || {
                let page = lock(&state).todo_page(&mut cursor, PAGE);
                (page, cursor)
            })
            .await
            .expect("reading the queue panicked");
            match page {
                (Ok(page), _) if page.is_empty() => None,
                (Ok(page), cursor) => Some((futures::stream::iter(page), Some(cursor))),
                (Err(e), _) => {
                    *error.lock().expect("slot lock poisoned") = Some(e);
                    None
                }
            }
        }
    })
    .flatten()
}
