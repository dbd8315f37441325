//! The queue of projects to sync, read from the database a page at a time as the sync takes
//! projects from it (failed ones first): a first full sync queues every project upstream has,
//! and memory must not grow with that.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::lock;
use crate::state::{State, StateError, Todo, TodoCursor};

/// Projects read per database query.
const PAGE: usize = 1000;

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

/// Every page of the queue, for the dry run (which reads the database, never the stream).
pub fn pages(state: &State, mut each: impl FnMut(Vec<Todo>)) -> crate::state::Result<()> {
    let mut cursor = TodoCursor::default();
    loop {
        let page = state.todo_page(&mut cursor, PAGE)?;
        if page.is_empty() {
            return Ok(());
        }
        each(page);
    }
}
