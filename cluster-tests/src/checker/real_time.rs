//! The order of positions respects real time: an append takes effect after it was invoked, so
//! every append in the log (acknowledged or not) lies after every append acknowledged before
//! it was invoked. A retry that reuses an idempotency key takes effect no earlier than its first
//! attempt, and is acknowledged by its first acknowledgement.

use std::time::Instant;

use super::context::{Context, LogicalAppend};
use super::violation::{Violation, ViolationKind};
use crate::history::History;

/// An append with its place in the log.
struct Placed {
    invoked: Instant,
    acknowledged: Option<Instant>,
    first_position: u64,
    last_position: u64,
    who: String,
}

/// Every append must come after every append acknowledged before it was invoked.
fn sweep(placed: Vec<Placed>) -> Vec<Violation> {
    let mut by_acknowledgement: Vec<usize> = (0..placed.len())
        .filter(|index| placed[*index].acknowledged.is_some())
        .collect();
    by_acknowledgement.sort_by_key(|index| placed[*index].acknowledged);
    let mut by_invocation: Vec<usize> = (0..placed.len()).collect();
    by_invocation.sort_by_key(|index| placed[*index].invoked);

    let mut violations = Vec::new();
    // The append with the highest last position among those acknowledged so far.
    let mut highest: Option<usize> = None;
    let mut acknowledged = by_acknowledgement.iter().peekable();
    for &current in &by_invocation {
        let invoked = placed[current].invoked;
        while let Some(&earlier) =
            acknowledged.next_if(|earlier| placed[**earlier].acknowledged < Some(invoked))
        {
            if highest
                .is_none_or(|highest| placed[earlier].last_position > placed[highest].last_position)
            {
                highest = Some(earlier);
            }
        }
        if let Some(earlier) = highest
            && placed[earlier].last_position >= placed[current].first_position
        {
            violations.push(Violation::new(
                ViolationKind::RealTimeOrder,
                format!(
                    "{} at {} was invoked after {} at {} was acknowledged, yet is not after it",
                    placed[current].who,
                    placed[current].first_position,
                    placed[earlier].who,
                    placed[earlier].last_position
                ),
            ));
        }
    }
    violations
}

/// The check on the log: every append found in it, at the positions the log gives it.
pub(crate) fn check_real_time(context: &Context<'_>) -> Vec<Violation> {
    let placed = context
        .appends
        .iter()
        .filter_map(|append| {
            let (first_position, last_position) = context.placed(append)?;
            Some(Placed {
                invoked: append.invoked(),
                acknowledged: append.acknowledgement().map(|ack| ack.at),
                first_position,
                last_position,
                who: append.who(),
            })
        })
        .collect();
    sweep(placed)
}

/// The check on the history alone: every acknowledged append, at the positions it was
/// acknowledged at.
pub fn real_time_order(history: &History) -> Vec<String> {
    let context = Context::new(history, &[]);
    let placed = context
        .appends
        .iter()
        .filter_map(|append: &LogicalAppend<'_>| {
            let ack = append.acknowledgement()?;
            Some(Placed {
                invoked: append.invoked(),
                acknowledged: Some(ack.at),
                first_position: ack.first_position,
                last_position: ack.last_position,
                who: append.who(),
            })
        })
        .collect();
    super::violation::messages(sweep(placed))
}
