//! The `[limits]` a request meets once it is on a connection: how large a
//! message may be, how long its messages may take, and how many calls,
//! streams and table-file transfers one user holds at once. (What bounds
//! connections themselves is the listener's.)

pub mod fairness;

use std::time::Duration;

use crate::config::{check_at_least_one, check_positive, invalid, ConfigError, LimitsConfig, DOLT_MAX_MESSAGE_BYTES};
use fairness::{Limit, UserSlots};

#[derive(Debug)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub request_read_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub stream_slots: UserSlots,
    pub call_slots: UserSlots,
    pub transfer_slots: UserSlots,
}

impl Limits {
    pub fn build(config: &LimitsConfig) -> Result<Limits, ConfigError> {
        if config.max_message_bytes < DOLT_MAX_MESSAGE_BYTES {
            return Err(invalid(
                "limits.max_message_bytes",
                format!("must be at least {DOLT_MAX_MESSAGE_BYTES} (Dolt sends messages up to 128 MiB)"),
            ));
        }
        if config.max_message_bytes > u32::MAX as usize {
            return Err(invalid("limits.max_message_bytes", "must fit the 4-byte gRPC length prefix"));
        }
        check_positive("limits.request_read_timeout", config.request_read_timeout)?;
        check_positive("limits.stream_idle_timeout", config.stream_idle_timeout)?;
        check_at_least_one("limits.max_streams_per_user", config.max_streams_per_user)?;
        check_at_least_one("limits.max_calls_per_user", config.max_calls_per_user)?;
        check_at_least_one("limits.max_transfers_per_user", config.max_transfers_per_user)?;
        Ok(Limits {
            max_message_bytes: config.max_message_bytes,
            request_read_timeout: config.request_read_timeout,
            stream_idle_timeout: config.stream_idle_timeout,
            stream_slots: UserSlots::new(Limit::Streams, config.max_streams_per_user, config.queue_wait),
            call_slots: UserSlots::new(Limit::Calls, config.max_calls_per_user, config.queue_wait),
            transfer_slots: UserSlots::new(Limit::Transfers, config.max_transfers_per_user, config.queue_wait),
        })
    }
}
