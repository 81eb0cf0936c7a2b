//! Topic scoping from the component's metadata: `allowedTopics`, `protectedTopics`,
//! `publishingScopes` and `subscriptionScopes` (`"app1=t1,t2;app2="`).
//!
//! A topic outside a non-empty `allowedTopics` is refused to everyone. An app named in a scope
//! list may use only the topics listed for it (none when the list is empty); an app not named
//! may use every topic that is not protected.

use std::collections::{HashMap, HashSet};

use mecha_core::Metadata;

/// The topic scopes of one pub/sub component.
#[derive(Clone, Debug, Default)]
pub struct TopicScopes {
    allowed: HashSet<String>,
    protected: HashSet<String>,
    publishing: HashMap<String, HashSet<String>>,
    subscription: HashMap<String, HashSet<String>>,
}

// === impl TopicScopes ===

impl TopicScopes {
    /// Reads the scopes from component metadata.
    pub fn from_metadata(metadata: &Metadata) -> Self {
        let list = |key: &str| -> HashSet<String> {
            metadata
                .get(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let scopes = |key: &str| -> HashMap<String, HashSet<String>> {
            let mut out = HashMap::new();
            for entry in metadata.get(key).unwrap_or_default().split(';') {
                let Some((app, topics)) = entry.split_once('=') else {
                    continue;
                };
                let app = app.trim();
                if app.is_empty() {
                    continue;
                }
                let set: &mut HashSet<String> = out.entry(app.to_owned()).or_default();
                set.extend(
                    topics
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
            out
        };
        Self {
            allowed: list("allowedTopics"),
            protected: list("protectedTopics"),
            publishing: scopes("publishingScopes"),
            subscription: scopes("subscriptionScopes"),
        }
    }

    /// Whether `app_id` may publish to `topic`.
    pub fn can_publish(&self, app_id: &str, topic: &str) -> bool {
        self.allows(&self.publishing, app_id, topic)
    }

    /// Whether `app_id` may subscribe to `topic`.
    pub fn can_subscribe(&self, app_id: &str, topic: &str) -> bool {
        self.allows(&self.subscription, app_id, topic)
    }

    fn allows(&self, scopes: &HashMap<String, HashSet<String>>, app_id: &str, topic: &str) -> bool {
        if !self.allowed.is_empty() && !self.allowed.contains(topic) {
            return false;
        }
        match scopes.get(app_id) {
            Some(topics) => topics.contains(topic),
            None => !self.protected.contains(topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pairs: &[(&str, &str)]) -> TopicScopes {
        TopicScopes::from_metadata(&Metadata::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ))
    }

    #[test]
    fn scope_rules() {
        let s = scopes(&[]);
        assert!(s.can_publish("a", "t") && s.can_subscribe("a", "t"));
        let s = scopes(&[
            ("publishingScopes", "app1=t1,t2;app2="),
            ("subscriptionScopes", "app1=t1"),
        ]);
        assert!(s.can_publish("app1", "t2"));
        assert!(!s.can_publish("app1", "t3"));
        assert!(!s.can_publish("app2", "t1"));
        assert!(s.can_publish("app3", "anything"));
        assert!(s.can_subscribe("app1", "t1") && !s.can_subscribe("app1", "t2"));
        let s = scopes(&[
            ("allowedTopics", "t1, t2"),
            ("protectedTopics", "t2"),
            ("publishingScopes", "app1=t2"),
        ]);
        assert!(!s.can_publish("any", "t3"));
        assert!(s.can_publish("any", "t1"));
        assert!(!s.can_publish("any", "t2"));
        assert!(s.can_publish("app1", "t2"));
    }
}
