//! Reading `infra/template.yaml`: resources, parameters, and the intrinsic
//! functions the local stack needs (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`,
//! in long and short `!Tag` form), resolved against provisioned resources.

use anyhow::{Context as _, Result, anyhow, bail};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Emulator constants: moto's account, the local region.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// One resource of the template.
#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    pub kind: String,
    pub properties: Value,
}

impl Resource {
    pub fn prop(&self, name: &str) -> Option<&Value> {
        self.properties.get(name)
    }
}

/// The parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pub resources: BTreeMap<String, Resource>,
    pub parameters: BTreeMap<String, Option<String>>,
    pub globals_env: Value,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let doc: Value = serde_yaml::from_str(text).context("parse the template")?;
        let mut resources = BTreeMap::new();
        let items = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .context("template has no Resources")?;
        for (id, body) in items {
            let logical_id = id.as_str().context("resource id")?.to_string();
            let kind = body
                .get("Type")
                .and_then(Value::as_str)
                .with_context(|| format!("{logical_id} has no Type"))?
                .to_string();
            let properties = body
                .get("Properties")
                .cloned()
                .unwrap_or(Value::Mapping(Default::default()));
            resources.insert(
                logical_id.clone(),
                Resource {
                    logical_id,
                    kind,
                    properties,
                },
            );
        }
        let mut parameters = BTreeMap::new();
        if let Some(params) = doc.get("Parameters").and_then(Value::as_mapping) {
            for (name, body) in params {
                let default = body.get("Default").map(scalar_string);
                parameters.insert(name.as_str().unwrap_or_default().to_string(), default);
            }
        }
        let globals_env = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Self {
            resources,
            parameters,
            globals_env,
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.values().filter(move |r| r.kind == kind)
    }

    /// A function's environment variables (`Globals` merged with its own), resolved.
    pub fn function_env(&self, function: &str, resolver: &Resolver<'_>) -> Result<BTreeMap<String, String>> {
        let resource = self
            .resources
            .get(function)
            .with_context(|| format!("no function {function} in the template"))?;
        let own = resource.prop("Environment").and_then(|e| e.get("Variables"));
        let mut env = BTreeMap::new();
        for vars in [Some(&self.globals_env), own].into_iter().flatten() {
            for (k, v) in vars.as_mapping().into_iter().flatten() {
                let key = k.as_str().context("variable name")?.to_string();
                let value = resolver
                    .string(v)
                    .with_context(|| format!("{function}: variable {key}"))?;
                env.insert(key, value);
            }
        }
        Ok(env)
    }

    /// The serverless functions' logical ids.
    pub fn functions(&self) -> Vec<String> {
        self.of_kind("AWS::Serverless::Function")
            .map(|r| r.logical_id.clone())
            .collect()
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// What a provisioned resource answers to `Ref` and `Fn::GetAtt`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Physical {
    /// The value of `Ref`.
    pub id: String,
    /// `Fn::GetAtt` attributes (`Arn`, `QueueName`, `QueueUrl`, ...).
    pub attrs: BTreeMap<String, String>,
}

/// Resolves intrinsic functions.
pub struct Resolver<'a> {
    pub stack_name: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
    pub physical: &'a BTreeMap<String, Physical>,
}

impl Resolver<'_> {
    fn reference(&self, name: &str) -> Result<String> {
        match name {
            "AWS::StackName" => return Ok(self.stack_name.to_string()),
            "AWS::Region" => return Ok(REGION.to_string()),
            "AWS::AccountId" => return Ok(ACCOUNT_ID.to_string()),
            "AWS::Partition" => return Ok("aws".to_string()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_string()),
            _ => {}
        }
        if let Some(v) = self.parameters.get(name) {
            return Ok(v.clone());
        }
        self.physical
            .get(name)
            .map(|p| p.id.clone())
            .ok_or_else(|| anyhow!("Ref {name}: not provisioned"))
    }

    fn get_att(&self, target: &str) -> Result<String> {
        let (id, attr) = target
            .split_once('.')
            .ok_or_else(|| anyhow!("GetAtt {target}: expected Resource.Attribute"))?;
        let physical = self
            .physical
            .get(id)
            .ok_or_else(|| anyhow!("GetAtt {target}: {id} not provisioned"))?;
        physical
            .attrs
            .get(attr)
            .cloned()
            .ok_or_else(|| anyhow!("GetAtt {target}: no attribute {attr}"))
    }

    fn sub(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| anyhow!("Sub {text}: unclosed ${{"))?
                + start;
            let name = &rest[start + 2..end];
            let value = if name.contains('.') {
                self.get_att(name)?
            } else {
                self.reference(name)?
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolves a value to a string.
    pub fn string(&self, value: &Value) -> Result<String> {
        match self.resolve(value)? {
            Value::String(s) => Ok(s),
            other => Ok(scalar_string(&other)),
        }
    }

    /// Resolves every intrinsic function inside a value.
    pub fn resolve(&self, value: &Value) -> Result<Value> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let inner = &tagged.value;
                let out = match tag.trim_start_matches('!') {
                    "Ref" => self.reference(inner.as_str().context("!Ref needs a name")?)?,
                    "GetAtt" => match inner {
                        Value::String(s) => self.get_att(s)?,
                        Value::Sequence(parts) => {
                            self.get_att(&parts.iter().map(scalar_string).collect::<Vec<_>>().join("."))?
                        }
                        _ => bail!("!GetAtt needs Resource.Attribute"),
                    },
                    "Sub" => self.sub(inner.as_str().context("!Sub needs a string")?)?,
                    "Join" => self.join(inner)?,
                    other => bail!("unsupported intrinsic !{other}"),
                };
                Ok(Value::String(out))
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (key, inner) = map.iter().next().context("one entry")?;
                match key.as_str() {
                    Some("Ref") => Ok(Value::String(
                        self.reference(inner.as_str().context("Ref needs a name")?)?,
                    )),
                    Some("Fn::GetAtt") => {
                        let target = match inner {
                            Value::Sequence(parts) => parts.iter().map(scalar_string).collect::<Vec<_>>().join("."),
                            other => scalar_string(other),
                        };
                        Ok(Value::String(self.get_att(&target)?))
                    }
                    Some("Fn::Sub") => Ok(Value::String(
                        self.sub(inner.as_str().context("Fn::Sub needs a string")?)?,
                    )),
                    Some("Fn::Join") => Ok(Value::String(self.join(inner)?)),
                    _ => {
                        let mut out = serde_yaml::Mapping::new();
                        out.insert(key.clone(), self.resolve(inner)?);
                        Ok(Value::Mapping(out))
                    }
                }
            }
            Value::Mapping(map) => {
                let mut out = serde_yaml::Mapping::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.resolve(v)?);
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => Ok(Value::Sequence(
                items.iter().map(|v| self.resolve(v)).collect::<Result<_>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    fn join(&self, inner: &Value) -> Result<String> {
        let parts = inner.as_sequence().context("Join needs [separator, [values]]")?;
        let separator = parts.first().map(scalar_string).unwrap_or_default();
        let values = parts.get(1).and_then(Value::as_sequence).context("Join needs a list")?;
        Ok(values
            .iter()
            .map(|v| self.string(v))
            .collect::<Result<Vec<_>>>()?
            .join(&separator))
    }
}

/// The logical id a `!GetAtt X.Arn` / `!Ref X` points at, without resolving it.
pub fn referenced_id(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(t) => match &t.value {
            Value::String(s) => Some(s.split('.').next().unwrap_or(s).to_string()),
            Value::Sequence(parts) => parts.first().map(scalar_string),
            _ => None,
        },
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            match (k.as_str()?, v) {
                ("Ref", Value::String(s)) => Some(s.clone()),
                ("Fn::GetAtt", Value::Sequence(parts)) => parts.first().map(scalar_string),
                ("Fn::GetAtt", Value::String(s)) => Some(s.split('.').next().unwrap_or(s).to_string()),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Mode:
    Type: String
    Default: "off"
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      Name: !Sub "${AWS::StackName}-q-${Mode}"
      Arn: !GetAtt Q.Arn
      Long: { "Fn::GetAtt": ["Q", "QueueName"] }
      Joined: !Join ["/", [a, !Ref Mode]]
"#;

    #[test]
    fn resolves_short_and_long_intrinsics() {
        let t = Template::parse(TEMPLATE).expect("parse");
        let params = BTreeMap::from([("Mode".to_string(), "off".to_string())]);
        let mut physical = BTreeMap::new();
        physical.insert(
            "Q".to_string(),
            Physical {
                id: "http://q".into(),
                attrs: BTreeMap::from([("Arn".into(), "arn:q".into()), ("QueueName".into(), "q".into())]),
            },
        );
        let r = Resolver {
            stack_name: "s",
            parameters: &params,
            physical: &physical,
        };
        let props = r.resolve(&t.resources["Q"].properties).expect("resolve");
        assert_eq!(props["Name"].as_str(), Some("s-q-off"));
        assert_eq!(props["Arn"].as_str(), Some("arn:q"));
        assert_eq!(props["Long"].as_str(), Some("q"));
        assert_eq!(props["Joined"].as_str(), Some("a/off"));
        assert_eq!(referenced_id(&t.resources["Q"].properties["Arn"]).as_deref(), Some("Q"));
        assert_eq!(t.parameters["Mode"].as_deref(), Some("off"));
    }

    #[test]
    fn the_project_template_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let t = Template::load(&path).expect("load");
        assert!(t.functions().contains(&"DiscoveryFunction".to_string()));
        assert!(t.of_kind("AWS::DynamoDB::Table").count() >= 1);
    }
}
