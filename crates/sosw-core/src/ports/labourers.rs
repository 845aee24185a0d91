//! The labourers' side of the store: what is stored about each labourer rather than each task — its circuit
//! breaker ([`crate::breaker`]), an operator's controls and the dispatch lease with the shared flow state
//! ([`crate::flow`]).

use super::StoreResult;
use crate::breaker::LabourerState;
use crate::flow::{DispatchRecord, FlowState, LabourerControl, Reports};
use crate::time::Time;
use async_trait::async_trait;
use std::fmt::Debug;

/// Every [`super::TaskStore`] is one: the engine reaches both through one `Arc<dyn TaskStore>`.
#[async_trait]
pub trait LabourerStore: Send + Sync + Debug {
    /// The stored breaker state of every labourer that has one (held back, or counting tasks closed as dead in a
    /// row), by labourer id.
    async fn labourer_states(&self) -> StoreResult<Vec<LabourerState>>;

    /// Creates or replaces a labourer's breaker state.
    async fn save_labourer_state(&self, state: &LabourerState) -> StoreResult<()>;

    /// Forgets a labourer's breaker state (nothing happens if it has none).
    async fn clear_labourer_state(&self, labourer_id: &str) -> StoreResult<()>;

    /// Every labourer's stored operator control, by labourer id.
    async fn labourer_controls(&self) -> StoreResult<Vec<LabourerControl>>;

    /// Creates or replaces a labourer's control; an empty one ([`LabourerControl::is_empty`]) is forgotten.
    async fn save_labourer_control(&self, control: &LabourerControl) -> StoreResult<()>;

    /// Takes the labourer's dispatch lease for `holder` until `until`, and returns the shared flow state — or
    /// `None`, changing nothing, while another holder's lease runs (`lease_until > now`). The holder may take its
    /// own lease again (a renewal). Atomic: of two concurrent takers, at most one gets the lease.
    async fn take_dispatch(
        &self,
        labourer_id: &str,
        holder: &str,
        now: Time,
        until: Time,
    ) -> StoreResult<Option<FlowState>>;

    /// Gives the lease back and stores `flow` — only if `holder` still holds it; `false` (nothing written) if its
    /// lease ran out and another orchestrator took it. The workers' reports are not overwritten:
    /// `flow.reports_learned` is subtracted from them, so that reports added since the lease was taken are kept.
    async fn give_back_dispatch(&self, labourer_id: &str, holder: &str, flow: &FlowState) -> StoreResult<bool>;

    /// Adds workers' reports to the labourer's counts ([`FlowState::reports`]), creating its record if needed.
    /// Atomic: concurrent additions (WorkerAssistants in several processes) and a lease's give-back all count.
    async fn add_reports(&self, labourer_id: &str, reports: &Reports) -> StoreResult<()>;

    /// Every labourer's dispatch record (lease and flow state), by labourer id.
    async fn dispatch_records(&self) -> StoreResult<Vec<DispatchRecord>>;
}
