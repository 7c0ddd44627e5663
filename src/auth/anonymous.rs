//! Anonymous access: allow lists of agent and service names
//! (`apm-server.auth.anonymous.allow_agent` / `allow_service`; an empty list
//! allows every name). Rules and rationale: docs/security.md.

use super::{Action, Resource, Unauthorized};
use crate::config::Anonymous;
use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct AllowLists {
    /// Empty = any agent.
    pub agents: HashSet<String>,
    /// Empty = any service.
    pub services: HashSet<String>,
    /// The configured order of `allow_agent` (agent-config filtering uses prefixes).
    pub agent_list: Vec<String>,
}

impl AllowLists {
    pub fn from_config(a: &Anonymous) -> Self {
        AllowLists {
            agents: a.allow_agent.iter().cloned().collect(),
            services: a.allow_service.iter().cloned().collect(),
            agent_list: a.allow_agent.clone(),
        }
    }

    /// Service list first, then agent list; agent config checks only the service.
    pub fn authorize(&self, action: Action, res: &Resource<'_>) -> Result<(), Unauthorized> {
        match action {
            Action::SourcemapUpload => Err(Unauthorized(
                "unauthorized: anonymous access not permitted for sourcemap uploads".into(),
            )),
            Action::AgentConfig | Action::EventIngest => {
                if !self.services.is_empty() {
                    let s = res.service_name.unwrap_or("");
                    if !self.services.contains(s) {
                        return Err(Unauthorized(format!(
                            "unauthorized: anonymous access not permitted for service \"{s}\""
                        )));
                    }
                }
                if action == Action::EventIngest && !self.agents.is_empty() {
                    let a = res.agent_name.unwrap_or("");
                    if !self.agents.contains(a) {
                        return Err(Unauthorized(format!(
                            "unauthorized: anonymous access not permitted for agent \"{a}\""
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(agents: &[&str], services: &[&str]) -> AllowLists {
        AllowLists {
            agents: agents.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            agent_list: agents.iter().map(|s| s.to_string()).collect(),
        }
    }

    const RES: Resource<'static> = Resource {
        agent_name: Some("iOS/swift"),
        service_name: Some("opbeans-ios"),
    };

    #[test]
    fn cases_h() {
        let none = lists(&[], &[]);
        assert_eq!(
            none.authorize(Action::SourcemapUpload, &RES).unwrap_err().0,
            "unauthorized: anonymous access not permitted for sourcemap uploads"
        );
        assert!(none.authorize(Action::AgentConfig, &RES).is_ok());
        assert!(none.authorize(Action::EventIngest, &RES).is_ok());
        assert!(lists(&["iOS/swift"], &[])
            .authorize(Action::AgentConfig, &RES)
            .is_ok());
        assert_eq!(
            lists(&["rum-js"], &[])
                .authorize(Action::EventIngest, &RES)
                .unwrap_err()
                .0,
            "unauthorized: anonymous access not permitted for agent \"iOS/swift\""
        );
        assert!(lists(&[], &["opbeans-ios"])
            .authorize(Action::AgentConfig, &RES)
            .is_ok());
        assert_eq!(
            lists(&[], &["opbeans-rum"])
                .authorize(Action::AgentConfig, &RES)
                .unwrap_err()
                .0,
            "unauthorized: anonymous access not permitted for service \"opbeans-ios\""
        );
        let no_agent = Resource {
            agent_name: None,
            service_name: Some("opbeans-ios"),
        };
        assert!(lists(&["iOS/swift"], &[])
            .authorize(Action::AgentConfig, &no_agent)
            .is_ok());
        let empty_svc = Resource {
            agent_name: Some("iOS/swift"),
            service_name: Some(""),
        };
        assert_eq!(
            lists(&[], &["opbeans-ios"])
                .authorize(Action::AgentConfig, &empty_svc)
                .unwrap_err()
                .0,
            "unauthorized: anonymous access not permitted for service \"\""
        );
        let empty_agent = Resource {
            agent_name: Some(""),
            service_name: Some("opbeans-ios"),
        };
        assert_eq!(
            lists(&["iOS/swift"], &[])
                .authorize(Action::EventIngest, &empty_agent)
                .unwrap_err()
                .0,
            "unauthorized: anonymous access not permitted for agent \"\""
        );
    }
}
