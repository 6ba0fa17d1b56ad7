//! The submit-time check of a callback URL's host: a name that resolves to
//! a forbidden address is refused at submission rather than at the first
//! attempt. The checks that need no lookup are validation's
//! ([`crate::validate::webhook_url`]).

use crate::detail::Detail;
use crate::error::ApiError;
use crate::state::AppState;
use infq_common::webhooks::guard::GuardError;

/// The submit-time lookup of a callback host: a name that resolves to a
/// forbidden address is refused now rather than at the first attempt.
pub async fn check_url_resolves(state: &AppState, url: &str) -> Result<(), ApiError> {
    let Some(guard) = &state.guard else {
        return Ok(());
    };
    match guard.check_submitted(url).await {
        Ok(_) | Err(GuardError::Unresolvable { .. }) => Ok(()),
        Err(e) => Err(ApiError::Invalid(vec![Detail::field(
            "webhook_url",
            e.to_string(),
        )])),
    }
}
