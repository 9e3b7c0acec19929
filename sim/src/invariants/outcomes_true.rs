//! Every outcome a run reports is true of the world when it reports it: "executed" means its effect was accepted
//! under that fence, "done by other" names a holder that applied the effect or found it applied before, "gave up" comes after exactly `max_retries`
//! waits (not counting waits for an unavailable Spanner), "lease lost" means the row no longer carries its fence.

use crate::world::World;
use spanner_mutex_model::Outcome;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_model::check::OUTCOMES_TRUE;

/// Judges client `c`'s outcome as it finishes.
pub fn judge(world: &World, c: usize, outcome: &Outcome) -> Option<String> {
    let client = &world.clients[c];
    let mutex = &world.mutexes[client.mutex];
    let id = client.machine.id();
    let effect_by = |writer, fence| mutex.effects.iter().any(|e| e.writer == writer && e.fence == fence);
    let true_ = match outcome {
        Outcome::Executed { fence } => effect_by(id, *fence),
        // The holder ran the section, or found it already done by an earlier fence and released it as DONE.
        Outcome::DoneByOther { holder, fence } => {
            effect_by(*holder, *fence) || mutex.effects.iter().any(|e| e.fence < *fence)
        }
        Outcome::NotNeeded => client.last_need_answer == Some(false),
        Outcome::GaveUp { attempts } => *attempts > world.cfg.max_retries() && client.waits == world.cfg.max_retries(),
        Outcome::LeaseLost { fence } => !mutex.row.as_ref().is_some_and(|r| r.holder == id && r.fence == *fence),
        Outcome::Released { .. } | Outcome::Cancelled | Outcome::Failed(_) => true,
    };
    (!true_).then(|| format!("{} reported {outcome:?}, which is not true", world.label(c)))
}

/// Reads the record [`judge`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.false_outcome.clone()
}
