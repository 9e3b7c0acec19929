//! Every outcome a run reports is true of the world when it reports it: "executed" means its effect was accepted
//! under that fence, "done by other" names a holder that applied the effect or found it applied before, "gave up" comes after exactly `max_retries`
//! waits (not counting waits for an unavailable Spanner), "lease lost" means the row no longer carries its fence.

use crate::world::World;
use spanner_mutex_check::{OutcomeFacts, outcome_is_true};
use spanner_mutex_model::Outcome;

/// The model checker's name for it.
pub const NAME: &str = spanner_mutex_check::OUTCOMES_TRUE;

/// Judges client `c`'s outcome as it finishes, by the model checker's definition.
pub fn judge(world: &World, c: usize, outcome: &Outcome) -> Option<String> {
    let client = &world.clients[c];
    let mutex = &world.mutexes[client.mutex];
    let effects: Vec<_> = mutex.effects.iter().map(|e| (e.writer, e.fence)).collect();
    let facts = OutcomeFacts {
        client: client.machine.id(),
        effects: &effects,
        row: mutex.spanner.row.as_ref(),
        last_need_answer: client.last_need_answer,
        waits: client.waits,
        max_retries: world.cfg.max_retries(),
    };
    (!outcome_is_true(outcome, &facts)).then(|| {
        format!("{} reported \"{}\", which is not true", world.label(c), outcome.words(|id| world.label_of(id)))
    })
}

/// Reads the record [`judge`] keeps.
pub fn check(world: &World) -> Option<String> {
    world.ghost.false_outcome.clone()
}
