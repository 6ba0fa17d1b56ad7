//! Publishing a batch's spooled rows, `chunk_rows` rows per message, with
//! publisher confirms.

use crate::bulk::SpoolReader;
use crate::error::ApiError;
use crate::spool::SpoolFile;
use crate::state::AppState;
use futures_util::{StreamExt, TryStreamExt};
use infq_common::job::Priority;
use infq_common::message::{JobMessage, Work};
use infq_common::registry::ModelSpec;
use infq_common::store::NewBatch;
use std::sync::Arc;

/// Publishes the spooled rows as chunk messages, up to `publish_window`
/// awaiting their confirms at once (fewer for wide rows: [`window_for`];
/// fewer while single jobs arrive: [`crate::pacing`]); the first failure
/// stops the upload.
pub(super) async fn publish_chunks(
    state: &Arc<AppState>,
    spec: &ModelSpec,
    batch: &NewBatch,
    spool: SpoolFile<std::fs::File>,
    ids: Option<SpoolFile<std::fs::File>>,
) -> Result<(), ApiError> {
    type Chunk = (Vec<f32>, Vec<String>);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Chunk>>(64);
    let width = spec.width();
    let rows = batch.total;
    let chunk_rows = batch.chunk_rows as usize;
    let columns = batch.passthrough.len();
    let reader = tokio::task::spawn_blocking(move || {
        let mut r = SpoolReader::new(spool, width, rows);
        let mut ids = ids.map(|f| std::io::BufReader::with_capacity(1 << 16, f));
        loop {
            let next = r.next_chunk(chunk_rows).transpose();
            let Some(item) = next else { break };
            let item = item.and_then(|inputs| {
                let n = inputs.len() / width.max(1) * columns;
                let values = match ids.as_mut() {
                    Some(ids) => crate::bulk::read_passthrough(ids, n)?,
                    None => Vec::new(),
                };
                Ok((inputs, values))
            });
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    // A tenant's chunks travel in its share of the lane (see
    // infq_common::shares), made ready before the first is published.
    let share = batch
        .tenant
        .as_deref()
        .and_then(|t| infq_common::shares::Share::new(&batch.model, t));
    if let Some(share) = &share {
        state
            .publisher
            .open_share(&state.shares, share)
            .await
            .map_err(ApiError::from)?;
    }
    let tenant = share.as_ref().map(|s| s.tenant.clone());
    let tenant = &tenant;
    let window = window_for(
        state.settings.producer.publish_window,
        width * chunk_rows,
        columns * chunk_rows,
    );
    // Every chunk on one channel: a message the broker returns is then
    // reported on a confirm of this batch, which fails as a whole.
    let lease = state.publisher.lease().await?;
    let lease = &lease;
    let result = tokio_stream_of(rx)
        .enumerate()
        .map(|(index, chunk)| async move {
            let (inputs, passthrough) =
                chunk.map_err(|e| ApiError::Internal(format!("spool: {e}")))?;
            let msg = JobMessage {
                work: Work::Chunk {
                    batch: batch.id,
                    index: index as u32,
                    first_row: index as u64 * batch.chunk_rows as u64 + 1,
                },
                model: batch.model.clone(),
                version: batch.version.clone(),
                priority: Priority::Bulk,
                inputs,
                created_at_ms: batch.created_at_ms,
                deadline_at_ms: None,
                retries: 0,
                webhook_url: None,
                tenant: tenant.clone(),
                retention_ms: None,
                passthrough,
            };
            // Noted before it is published, so no other message for this
            // place of the batch can run.
            state
                .store
                .note_chunk_digest(&batch.id, index as u32, &msg.digest())
                .await?;
            let _turn = state.pacing.chunk_turn().await;
            state
                .publisher
                .publish_on(lease, &msg)
                .await
                .map_err(ApiError::from)
        })
        .buffer_unordered(window)
        .try_for_each(|()| async { Ok(()) })
        .await;
    reader.abort();
    result
}

/// Chunk messages in flight at once are bounded by their inputs too: a
/// wide model's chunk is far larger than a narrow one's, and each one
/// awaiting its confirm holds its rows and its encoded body. About
/// [`WINDOW_BYTES`] of rows, never more than `configured` chunks, never
/// fewer than 4.
fn window_for(configured: usize, values_per_chunk: usize, passthrough_per_chunk: usize) -> usize {
    // A value is 4 bytes in the rows and about 10 in the JSON body; a
    // passthrough value a few dozen.
    let bytes = values_per_chunk * 14 + passthrough_per_chunk * 48;
    let fits = WINDOW_BYTES / bytes.max(1);
    configured.max(1).min(fits.max(4))
}

/// What the chunks awaiting their confirms may hold, about.
const WINDOW_BYTES: usize = 8 << 20;

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::window_for;

    #[test]
    fn the_window_holds_a_bounded_amount_of_rows() {
        // Narrow rows: the configured window.
        assert_eq!(window_for(256, 256 * 3, 0), 256);
        // 49 values a row: about 8 MiB of chunks.
        let wide = window_for(256, 256 * 49, 0);
        assert!((40..=50).contains(&wide), "{wide}");
        // Passthrough columns count too.
        assert!(window_for(256, 256 * 3, 256 * 4) < 256);
        // Never fewer than 4, never more than configured, never 0.
        assert_eq!(window_for(256, 1 << 30, 0), 4);
        assert_eq!(window_for(2, 1 << 30, 0), 2);
        assert_eq!(window_for(0, 3, 0), 1);
    }
}
