//! [`Recorder`]: builds a [`History`] from invoke / complete events as they happen.
//!
//! Each event gets the next tick of a logical clock, so the history keeps exactly the real-time
//! order in which the events were recorded. Operations still in flight when the recording
//! ends are unknown.

use std::collections::HashMap;

use crate::error::HistoryError;
use crate::history::{History, Operation, Outcome};

/// Records operations event by event; one operation in flight per client.
#[derive(Debug)]
pub struct Recorder<I, O> {
    history: History<I, O>,
    in_flight: HashMap<u64, (u64, I)>,
    clock: u64,
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Recorder {
            history: History::new(),
            in_flight: HashMap::new(),
            clock: 0,
        }
    }
}

impl<I, O> Recorder<I, O> {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn tick(&mut self) -> u64 {
        let now = self.clock;
        self.clock += 1;
        now
    }

    /// `client` invokes `input`.
    pub fn invoke(&mut self, client: u64, input: I) -> Result<(), HistoryError> {
        if self.in_flight.contains_key(&client) {
            return Err(HistoryError::ClientBusy { client });
        }
        let call = self.tick();
        self.in_flight.insert(client, (call, input));
        Ok(())
    }

    /// The input `client` has in flight, if any.
    pub fn in_flight(&self, client: u64) -> Option<&I> {
        self.in_flight.get(&client).map(|(_, input)| input)
    }

    /// `client`'s operation returned `output`.
    pub fn complete(&mut self, client: u64, output: O) -> Result<(), HistoryError> {
        let (call, input) = self.take(client)?;
        let at = self.tick();
        self.history.push(Operation {
            client,
            call,
            input,
            outcome: Outcome::Returned { at, output },
        })?;
        Ok(())
    }

    /// `client`'s operation ended without a known outcome (timeout, lost connection): it may
    /// take effect at any later point, or never.
    pub fn complete_unknown(&mut self, client: u64) -> Result<(), HistoryError> {
        let (call, input) = self.take(client)?;
        self.history.push(Operation {
            client,
            call,
            input,
            outcome: Outcome::Unknown,
        })?;
        Ok(())
    }

    /// `client`'s operation definitely did not take effect: it is left out of the history.
    pub fn discard(&mut self, client: u64) -> Result<I, HistoryError> {
        self.take(client).map(|(_, input)| input)
    }

    fn take(&mut self, client: u64) -> Result<(u64, I), HistoryError> {
        self.in_flight
            .remove(&client)
            .ok_or(HistoryError::NothingInFlight { client })
    }

    /// Ends the recording: operations still in flight become unknown, in call order.
    pub fn finish(mut self) -> History<I, O> {
        let mut pending: Vec<(u64, u64, I)> = self
            .in_flight
            .drain()
            .map(|(client, (call, input))| (call, client, input))
            .collect();
        pending.sort_by_key(|(call, client, _)| (*call, *client));
        for (call, client, input) in pending {
            // Calls were validated when they were recorded.
            let _ = self.history.push(Operation {
                client,
                call,
                input,
                outcome: Outcome::Unknown,
            });
        }
        self.history
    }
}
