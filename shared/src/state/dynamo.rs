//! DynamoDB [`ItemStore`]: the table of the SAM template (`StateTable`).
//!
//! Attributes: `pk`, `sk`, `gsi1pk`, `gsi1sk` (strings), `ttl` and `ver`
//! (numbers), `doc` (the JSON document, a string).

use super::items::{Cursor, Index, Item, ItemStore, Page, PutCondition, Query, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use std::collections::HashMap;

/// The state table through the AWS SDK.
#[derive(Clone)]
pub struct DynamoItems {
    client: Client,
    table: String,
}

impl DynamoItems {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

type Attrs = HashMap<String, AttributeValue>;

fn to_attrs(item: &Item) -> Attrs {
    let mut attrs = Attrs::new();
    attrs.insert("pk".into(), AttributeValue::S(item.pk.clone()));
    attrs.insert("sk".into(), AttributeValue::S(item.sk.clone()));
    if let Some(v) = &item.gsi1pk {
        attrs.insert("gsi1pk".into(), AttributeValue::S(v.clone()));
    }
    if let Some(v) = &item.gsi1sk {
        attrs.insert("gsi1sk".into(), AttributeValue::S(v.clone()));
    }
    if let Some(ttl) = item.ttl {
        attrs.insert("ttl".into(), AttributeValue::N(ttl.to_string()));
    }
    attrs.insert("ver".into(), AttributeValue::N(item.version.to_string()));
    attrs.insert("doc".into(), AttributeValue::S(item.doc.to_string()));
    attrs
}

fn from_attrs(attrs: &Attrs) -> Result<Item, StoreError> {
    let string = |name: &str| attrs.get(name).and_then(|v| v.as_s().ok()).cloned();
    let pk = string("pk").unwrap_or_default();
    let sk = string("sk").unwrap_or_default();
    let corrupt = |reason: &str| StoreError::Corrupt {
        pk: pk.clone(),
        sk: sk.clone(),
        reason: reason.to_string(),
    };
    let number = |name: &str| attrs.get(name).and_then(|v| v.as_n().ok()).map(|n| n.parse::<i64>());
    let ttl = match number("ttl") {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Err(corrupt("ttl is not a number")),
    };
    let version = match number("ver") {
        None => 0,
        Some(Ok(v)) => u64::try_from(v).map_err(|_| corrupt("negative version"))?,
        Some(Err(_)) => return Err(corrupt("ver is not a number")),
    };
    let doc = string("doc").ok_or_else(|| corrupt("no doc"))?;
    let doc = serde_json::from_str(&doc).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Item {
        pk: pk.clone(),
        sk: sk.clone(),
        gsi1pk: string("gsi1pk"),
        gsi1sk: string("gsi1sk"),
        ttl,
        version,
        doc,
    })
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(err: SdkError<E, R>) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(err).to_string())
}

/// The condition expression and values of a put, and the item as it will be stored.
fn condition_of(item: &Item, condition: PutCondition) -> (Item, Option<String>, Option<Attrs>) {
    let mut stored = item.clone();
    match condition {
        PutCondition::None => (stored, None, None),
        PutCondition::NotExists | PutCondition::Version(0) => {
            stored.version = 1;
            (stored, Some("attribute_not_exists(pk)".into()), None)
        }
        PutCondition::Version(expected) => {
            stored.version = expected + 1;
            let values = Attrs::from([(":ver".to_string(), AttributeValue::N(expected.to_string()))]);
            (stored, Some("ver = :ver".into()), Some(values))
        }
    }
}

#[async_trait]
impl ItemStore for DynamoItems {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(from_attrs).transpose()
    }

    async fn put(&self, item: Item, condition: PutCondition) -> Result<(), StoreError> {
        let (stored, expression, values) = condition_of(&item, condition);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_attrs(&stored)))
            .set_condition_expression(expression)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception())
                {
                    Err(StoreError::ConditionFailed {
                        pk: item.pk,
                        sk: item.sk,
                    })
                } else {
                    Err(unavailable(err))
                }
            }
        }
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        let (pk_name, sk_name, index_name) = match query.index {
            Index::Primary => ("pk", "sk", None),
            Index::Gsi1 => ("gsi1pk", "gsi1sk", Some("gsi1".to_string())),
        };
        let mut expression = "#p = :p".to_string();
        let mut names = HashMap::from([("#p".to_string(), pk_name.to_string())]);
        let mut values = Attrs::from([(":p".to_string(), AttributeValue::S(query.partition.clone()))]);
        if let Some(prefix) = &query.sk_prefix {
            expression.push_str(" AND begins_with(#s, :s)");
            names.insert("#s".into(), sk_name.into());
            values.insert(":s".into(), AttributeValue::S(prefix.clone()));
        }
        let start = query.start.as_ref().map(|c| {
            let mut key = Attrs::from([
                ("pk".to_string(), AttributeValue::S(c.pk.clone())),
                ("sk".to_string(), AttributeValue::S(c.sk.clone())),
            ]);
            if let (Index::Gsi1, Some(p), Some(s)) = (query.index, &c.gsi1pk, &c.gsi1sk) {
                key.insert("gsi1pk".into(), AttributeValue::S(p.clone()));
                key.insert("gsi1sk".into(), AttributeValue::S(s.clone()));
            }
            key
        });
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index_name)
            .key_condition_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(query.limit).unwrap_or(i32::MAX))
            .scan_index_forward(!query.descending)
            .consistent_read(query.index == Index::Primary)
            .send()
            .await
            .map_err(unavailable)?;
        let items = out.items().iter().map(from_attrs).collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key() {
            None => None,
            Some(_) => items.last().map(Cursor::of),
        };
        Ok(Page { items, next })
    }

    async fn put_all(&self, batch: Vec<(Item, PutCondition)>) -> Result<(), StoreError> {
        let first_key = batch
            .first()
            .map(|(i, _)| (i.pk.clone(), i.sk.clone()))
            .unwrap_or_default();
        let mut writes = Vec::with_capacity(batch.len());
        for (item, condition) in &batch {
            let (stored, expression, values) = condition_of(item, *condition);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_attrs(&stored)))
                .set_condition_expression(expression)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let failed_key = err.as_service_error().and_then(|e| match e {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
                        .cancellation_reasons()
                        .iter()
                        .position(|r| r.code() == Some("ConditionalCheckFailed"))
                        .map(|i| batch.get(i).map(|(it, _)| (it.pk.clone(), it.sk.clone())).unwrap_or(first_key.clone())),
                    _ => None,
                });
                match failed_key {
                    Some((pk, sk)) => Err(StoreError::ConditionFailed { pk, sk }),
                    None => Err(unavailable(err)),
                }
            }
        }
    }
}
