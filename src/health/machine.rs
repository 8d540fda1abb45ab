//! The rise/fall state machine of one server's active checks, pure: a server
//! that is up goes down after `fall` failed checks in a row, one that is down
//! comes up after `rise` passed checks in a row (HAProxy's and keepalived's
//! model). A new server starts down and its first check decides at once.

/// What one check result did to the health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Stay,
    WentUp,
    WentDown,
}

#[derive(Debug, Clone)]
pub struct Machine {
    up: bool,
    /// Results in a row against the current state.
    streak: u32,
    /// No result yet: the first one decides.
    fresh: bool,
}

impl Machine {
    /// A server whose state is not known yet (it starts down).
    pub fn fresh() -> Machine {
        Machine {
            up: false,
            streak: 0,
            fresh: true,
        }
    }

    /// A server whose state carries over (a reload, a changed check).
    pub fn from(up: bool) -> Machine {
        Machine {
            up,
            streak: 0,
            fresh: false,
        }
    }

    pub fn up(&self) -> bool {
        self.up
    }

    /// No result yet.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Results against the current state so far (rise or fall under way).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Verdict {
        if std::mem::take(&mut self.fresh) {
            self.up = ok;
            self.streak = 0;
            return if ok { Verdict::WentUp } else { Verdict::Stay };
        }
        if ok == self.up {
            self.streak = 0;
            return Verdict::Stay;
        }
        self.streak += 1;
        if self.streak < if self.up { fall } else { rise } {
            return Verdict::Stay;
        }
        self.up = ok;
        self.streak = 0;
        if ok {
            Verdict::WentUp
        } else {
            Verdict::WentDown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn run(m: &mut Machine, results: &[bool]) -> Vec<Verdict> {
        results.iter().map(|&ok| m.record(ok, 2, 3)).collect()
    }

    #[test]
    fn rise_and_fall() {
        let mut m = Machine::from(true);
        assert_eq!(
            run(&mut m, &[false, false, true]),
            [Stay, Stay, Stay],
            "a success resets the fall"
        );
        assert_eq!(run(&mut m, &[false, false, false]), [Stay, Stay, WentDown]);
        assert!(!m.up());
        assert_eq!(
            run(&mut m, &[true, false, true, true]),
            [Stay, Stay, Stay, WentUp]
        );
        assert!(m.up());
    }

    #[test]
    fn the_first_result_decides() {
        let mut m = Machine::fresh();
        assert_eq!(m.record(true, 5, 5), WentUp);
        let mut m = Machine::fresh();
        assert_eq!(m.record(false, 5, 5), Stay, "it was down already");
        assert_eq!(run(&mut m, &[true, true]), [Stay, WentUp]);
    }
}
