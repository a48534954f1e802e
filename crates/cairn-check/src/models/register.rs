//! [`Register`]: a single register with read, write and compare-and-set.

use crate::model::Model;

/// An operation on a [`Register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write(i64),
    /// Set the value to `to` if it is `from`.
    Cas {
        /// The value expected.
        from: i64,
        /// The value set.
        to: i64,
    },
}

/// What an operation on a [`Register`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// The value read; `None` when the register was never written.
    Read(Option<i64>),
    /// The write happened.
    Write,
    /// Whether the compare matched (and the value was set).
    Cas {
        /// The compare matched.
        succeeded: bool,
    },
}

/// One register, unset at first. The state is its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Register;

impl Model for Register {
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type State = Option<i64>;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<i64>> {
        match (input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Read(seen))) => {
                (seen == state).then_some(*state)
            }
            (RegisterInput::Write(value), None | Some(RegisterOutput::Write)) => Some(Some(*value)),
            (RegisterInput::Cas { from, to }, None) => Some(if *state == Some(*from) {
                Some(*to)
            } else {
                *state
            }),
            (RegisterInput::Cas { from, to }, Some(RegisterOutput::Cas { succeeded })) => {
                match (*state == Some(*from), succeeded) {
                    (true, true) => Some(Some(*to)),
                    (false, false) => Some(*state),
                    _ => None,
                }
            }
            // An output of another kind of operation is never legal.
            _ => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput) -> bool {
        matches!(input, RegisterInput::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::{Register, RegisterInput as I, RegisterOutput as O};
    use crate::model::Model;

    #[test]
    fn steps() {
        let r = Register;
        assert_eq!(r.step(&None, &I::Read, Some(&O::Read(None))), Some(None));
        assert_eq!(r.step(&None, &I::Read, Some(&O::Read(Some(1)))), None);
        assert_eq!(r.step(&None, &I::Write(3), Some(&O::Write)), Some(Some(3)));
        let cas = I::Cas { from: 3, to: 4 };
        let ok = O::Cas { succeeded: true };
        let failed = O::Cas { succeeded: false };
        assert_eq!(r.step(&Some(3), &cas, Some(&ok)), Some(Some(4)));
        assert_eq!(r.step(&Some(2), &cas, Some(&ok)), None);
        assert_eq!(r.step(&Some(2), &cas, Some(&failed)), Some(Some(2)));
        assert_eq!(r.step(&Some(3), &cas, Some(&failed)), None);
        assert_eq!(r.step(&Some(3), &cas, None), Some(Some(4)));
        assert_eq!(r.step(&None, &cas, None), Some(None));
        assert_eq!(r.step(&None, &I::Write(1), Some(&O::Read(None))), None);
    }
}
