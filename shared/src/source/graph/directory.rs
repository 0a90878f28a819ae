//! [`Directory`] over Graph: users, mailbox and OneDrive probes, sites (§A3).

use super::client::GraphClient;
use crate::source::{Directory, DirectoryDrive, DirectorySite, DirectoryUser, SourceError, SourceStats};
use async_trait::async_trait;
use serde_json::Value;

const USER_FIELDS: &str = "id,userPrincipalName,mail,displayName,accountEnabled,userType,assignedPlans";

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn user_of(v: &Value) -> Result<DirectoryUser, SourceError> {
    let id = text(v, "id").ok_or_else(|| SourceError::Protocol("user without id".into()))?;
    let upn = text(v, "userPrincipalName").unwrap_or_default();
    let exchange_licensed = v.get("assignedPlans").and_then(Value::as_array).is_some_and(|plans| {
        plans.iter().any(|p| {
            text(p, "service").is_some_and(|s| s.eq_ignore_ascii_case("exchange"))
                && text(p, "capabilityStatus").is_some_and(|s| s.eq_ignore_ascii_case("enabled"))
        })
    });
    Ok(DirectoryUser {
        display_name: text(v, "displayName").unwrap_or_else(|| upn.clone()),
        user_principal_name: upn,
        mail: text(v, "mail"),
        account_enabled: v.get("accountEnabled").and_then(Value::as_bool).unwrap_or(true),
        guest: text(v, "userType").is_some_and(|t| t.eq_ignore_ascii_case("guest")),
        exchange_licensed,
        id,
    })
}

#[async_trait]
impl Directory for GraphClient {
    async fn verify(&self) -> Result<(), SourceError> {
        self.get_json("/users?$top=1&$select=id").await.map(drop)
    }

    async fn users(&self) -> Result<Vec<DirectoryUser>, SourceError> {
        let values = self.get_all(&format!("/users?$select={USER_FIELDS}&$top=999")).await?;
        values.iter().map(user_of).collect()
    }

    async fn has_mailbox(&self, user_id: &str) -> Result<bool, SourceError> {
        match self
            .get_json(&format!("/users/{}/mailboxSettings", urlencoding::encode(user_id)))
            .await
        {
            Ok(_) => Ok(true),
            Err(SourceError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn drive_of(&self, user_id: &str) -> Result<Option<DirectoryDrive>, SourceError> {
        match self
            .get_json(&format!("/users/{}/drive", urlencoding::encode(user_id)))
            .await
        {
            Ok(v) => {
                let id = text(&v, "id").ok_or_else(|| SourceError::Protocol("drive without id".into()))?;
                Ok(Some(DirectoryDrive {
                    id,
                    name: text(&v, "name").unwrap_or_else(|| "OneDrive".into()),
                    web_url: text(&v, "webUrl"),
                }))
            }
            Err(SourceError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn sites(&self) -> Result<Vec<DirectorySite>, SourceError> {
        let values = self
            .get_all("/sites/getAllSites?$select=id,displayName,name,webUrl&$top=200")
            .await?;
        values
            .iter()
            .map(|v| {
                let id = text(v, "id").ok_or_else(|| SourceError::Protocol("site without id".into()))?;
                let display_name = text(v, "displayName")
                    .or_else(|| text(v, "name"))
                    .unwrap_or_else(|| id.clone());
                Ok(DirectorySite {
                    id,
                    display_name,
                    web_url: text(v, "webUrl"),
                })
            })
            .collect()
    }

    fn stats(&self) -> SourceStats {
        GraphClient::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn licence_comes_from_an_enabled_exchange_plan() {
        let licensed = json!({"id":"1","userPrincipalName":"a@x","assignedPlans":[{"service":"exchange","capabilityStatus":"Enabled"}]});
        let deleted = json!({"id":"2","userPrincipalName":"b@x","assignedPlans":[{"service":"exchange","capabilityStatus":"Deleted"}]});
        let guest = json!({"id":"3","userPrincipalName":"c#EXT#@x","userType":"Guest","accountEnabled":true});
        assert!(user_of(&licensed).expect("user").exchange_licensed);
        assert!(!user_of(&deleted).expect("user").exchange_licensed);
        let guest = user_of(&guest).expect("user");
        assert!(guest.guest && !guest.exchange_licensed && guest.account_enabled);
    }
}
