//! Every retry decision of the Kafka output. Worth another attempt: broken
//! or refused connections, timeouts, leadership moving, a broker short of
//! replicas. Failing at once: the topic does not exist or may not be
//! written, the broker refuses the message as too large or invalid, the
//! SASL handshake is refused.

use rskafka::client::error::{Error, ProtocolError};

/// Why a produce request failed for good, as a `events_failed` reason detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    /// The broker or the client refused the request on purpose.
    Refuse,
}

pub fn classify(e: &Error) -> Verdict {
    if refused_sasl(e) {
        return Verdict::Refuse;
    }
    let refused = matches!(
        e,
        Error::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition
                | ProtocolError::InvalidTopicException
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::CorruptMessage
                | ProtocolError::SaslAuthenticationFailed,
            ..
        }
    );
    if refused {
        Verdict::Refuse
    } else {
        Verdict::Retry
    }
}

/// A refused SASL handshake anywhere in the error's chain of causes.
fn refused_sasl(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rskafka::SaslError>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}
