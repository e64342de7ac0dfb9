//! A hashed timer wheel for the event loop: Raft ticks, connection idle checks and rate-limited
//! log lines. Owns only deadlines and their payloads; it never reads the clock itself (the loop
//! passes `now`), so tests drive it with made-up instants.
//!
//! Timers cannot be cancelled: a payload names what it is for (a connection token and its
//! generation, say) and the loop ignores one whose owner is gone. That keeps scheduling O(1)
//! and free of bookkeeping on the hot path; an idle timer re-arms itself for the remaining time
//! rather than being rescheduled on every byte.

use std::time::{Duration, Instant};

struct Timer<T> {
    /// The wheel tick at or after which the timer fires.
    at_tick: u64,
    payload: T,
}

pub struct TimerWheel<T> {
    resolution: Duration,
    origin: Instant,
    /// `slots[t % len]` holds timers due at tick `t`, possibly also at `t + k * len`.
    slots: Vec<Vec<Timer<T>>>,
    /// Every tick before this one has been expired.
    current_tick: u64,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// A wheel with `slot_count` slots of `resolution` each; deadlines further out than one turn
    /// wait in their slot until their turn comes.
    pub fn new(resolution: Duration, slot_count: usize, origin: Instant) -> TimerWheel<T> {
        assert!(!resolution.is_zero() && slot_count > 0, "timer wheel shape");
        TimerWheel {
            resolution,
            origin,
            slots: (0..slot_count).map(|_| Vec::new()).collect(),
            current_tick: 0,
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        (d.as_nanos() / self.resolution.as_nanos()) as u64
    }

    /// Schedules `payload` to fire at `at` (rounded up to the wheel's resolution; a deadline in
    /// the past fires at the next `expire`).
    pub fn schedule(&mut self, at: Instant, payload: T) {
        let d = at.saturating_duration_since(self.origin);
        let res = self.resolution.as_nanos();
        let tick = d.as_nanos().div_ceil(res) as u64;
        let at_tick = tick.max(self.current_tick);
        let slot = (at_tick % self.slots.len() as u64) as usize;
        self.slots[slot].push(Timer { at_tick, payload });
        self.len += 1;
    }

    /// Moves every timer due at or before `now` into `out`, in deadline order by slot.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        let now_tick = self.tick_of(now);
        let n = self.slots.len() as u64;
        // A long stall need not visit the same slot twice.
        let start = self.current_tick;
        let last = now_tick.min(self.current_tick + n - 1);
        while self.current_tick <= last {
            let slot = (self.current_tick % n) as usize;
            let timers = &mut self.slots[slot];
            let mut i = 0;
            while i < timers.len() {
                if timers[i].at_tick <= now_tick {
                    out.push(timers.swap_remove(i).payload);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            self.current_tick += 1;
        }
        // Revisit the current tick next time: a timer scheduled "now" must fire at the next expire.
        self.current_tick = now_tick.max(start);
    }

    /// How long the loop may sleep before the next timer is due (`None`: no timer at all).
    /// Looks one turn of the wheel ahead; a timer further out wakes the loop after one turn.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len() as u64;
        let horizon = self.current_tick + n;
        let mut due_tick = horizon;
        'scan: for t in self.current_tick..horizon {
            // A slot also holds timers of later turns: only one due at `t` counts here.
            if self.slots[(t % n) as usize].iter().any(|x| x.at_tick <= t) {
                due_tick = t;
                break 'scan;
            }
        }
        let at = self.origin
            + Duration::from_nanos((due_tick as u128 * self.resolution.as_nanos()) as u64);
        Some(at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_at_their_deadline_not_before() {
        // Goal: a timer never fires early and always fires once its deadline passed.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = TimerWheel::new(ms(1), 8, t0);
        w.schedule(t0 + ms(3), "a");
        w.schedule(t0 + ms(20), "far"); // more than one turn of the wheel
        w.schedule(t0 + ms(1), "b");
        let mut out = Vec::new();
        w.expire(t0 + ms(2), &mut out);
        assert_eq!(out, vec!["b"]);
        out.clear();
        w.expire(t0 + ms(11), &mut out);
        assert_eq!(out, vec!["a"]);
        out.clear();
        w.expire(t0 + ms(19), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + ms(20), &mut out);
        assert_eq!(out, vec!["far"]);
        assert!(w.is_empty());
    }

    #[test]
    fn next_timeout_never_sleeps_past_a_deadline() {
        // Goal: the poll timeout the wheel proposes ends at or before the earliest deadline.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = TimerWheel::new(ms(1), 16, t0);
        assert_eq!(w.next_timeout(t0), None);
        w.schedule(t0 + ms(40), 1);
        w.schedule(t0 + ms(5), 2);
        assert!(w.next_timeout(t0).unwrap() <= ms(5));
        let mut out = Vec::new();
        w.expire(t0 + ms(5), &mut out);
        assert_eq!(out, vec![2]);
        let d = w.next_timeout(t0 + ms(5)).unwrap();
        assert!(d <= ms(35), "{d:?}");
        w.expire(t0 + ms(5) + d, &mut out);
        // Possibly early (a later round in an earlier slot), never late: keep going to 40.
        w.expire(t0 + ms(40), &mut out);
        assert_eq!(out, vec![2, 1]);
    }

    #[test]
    fn a_later_turn_timer_does_not_hide_an_earlier_one() {
        // Goal: a far timer sharing an earlier slot must not push the wake-up past a near one.
        // Method: far timer lands in slot 2 (tick 10 = 2 + 8), near timer in slot 5.
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = TimerWheel::new(ms(1), 8, t0);
        w.schedule(t0 + ms(10), "far");
        w.schedule(t0 + ms(5), "near");
        assert!(w.next_timeout(t0).unwrap() <= ms(5));
    }

    #[test]
    fn a_past_deadline_fires_at_the_next_expire() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = TimerWheel::new(ms(1), 4, t0);
        let mut out = Vec::new();
        w.expire(t0 + ms(100), &mut out);
        w.schedule(t0 + ms(50), 7);
        assert_eq!(w.next_timeout(t0 + ms(100)), Some(Duration::ZERO));
        w.expire(t0 + ms(100), &mut out);
        assert_eq!(out, vec![7]);
    }
}
