//! Reading `infra/template.yaml`: parameters, `Globals`, resources, and the
//! intrinsic functions the local stack needs, in long (`Fn::Sub`) and short
//! (`!Sub`) form, resolved against the provisioned resources.
//!
//! Supported: `Ref` (parameters, resources, the `AWS::*` pseudo parameters),
//! `Fn::GetAtt` (`X.Attr` or `[X, Attr]`), `Fn::Sub` (string or
//! `[string, {vars}]`, with `${!Literal}` escapes), `Fn::Join`, `Fn::Select`,
//! `Fn::Split`, `Fn::Base64`, and property-level conditions: the `Conditions`
//! section (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`), `Fn::If`
//! and `AWS::NoValue` (the key or list item is dropped). Conditional resources
//! (`Condition:` on a resource) and `Fn::ImportValue` are refused with a clear
//! error: the local stack has no other stacks.

use anyhow::{Context as _, Result, anyhow, bail};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Emulator constants: moto's account, the local region.
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// Lambda's default timeout when neither the function nor `Globals` gives one.
pub const DEFAULT_FUNCTION_TIMEOUT_SECS: u64 = 3;

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
    /// Parameter name to its default, when it has one.
    pub parameters: BTreeMap<String, Option<String>>,
    /// Parameter name to its `AllowedValues`, when the template lists them.
    pub allowed_values: BTreeMap<String, Vec<String>>,
    /// `Globals.Function.Environment.Variables`.
    pub globals_env: Value,
    /// `Globals.Function`: what every serverless function inherits.
    pub globals_function: Value,
    /// The `Conditions` section, unevaluated.
    pub conditions: BTreeMap<String, Value>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("template {}", path.display()))
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
            if body.get("Condition").is_some() {
                bail!("{logical_id}: conditional resources are not supported by the local stack");
            }
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
        let mut allowed_values = BTreeMap::new();
        for (name, body) in doc.get("Parameters").and_then(Value::as_mapping).into_iter().flatten() {
            let name = name.as_str().context("parameter name")?.to_string();
            if let Some(allowed) = body.get("AllowedValues").and_then(Value::as_sequence) {
                allowed_values.insert(name.clone(), allowed.iter().map(scalar_string).collect());
            }
            parameters.insert(name, body.get("Default").map(scalar_string));
        }
        let globals_function = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);
        let globals_env = globals_function
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut conditions = BTreeMap::new();
        for (name, body) in doc.get("Conditions").and_then(Value::as_mapping).into_iter().flatten() {
            conditions.insert(name.as_str().context("condition name")?.to_string(), body.clone());
        }
        Ok(Self {
            resources,
            parameters,
            allowed_values,
            globals_env,
            globals_function,
            conditions,
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.values().filter(move |r| r.kind == kind)
    }

    /// The parameter values in force: `given` over the template's defaults,
    /// checked against `AllowedValues`. A parameter without a default must be given.
    pub fn parameter_values(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        if let Some(unknown) = given.keys().find(|k| !self.parameters.contains_key(*k)) {
            bail!(
                "the template has no parameter {unknown}; it has {:?}",
                self.parameters.keys().collect::<Vec<_>>()
            );
        }
        let mut values = BTreeMap::new();
        for (name, default) in &self.parameters {
            let value = given
                .get(name)
                .or(default.as_ref())
                .with_context(|| format!("template parameter {name} has no default: give a value"))?;
            match self.allowed_values.get(name) {
                Some(allowed) if !allowed.contains(value) => {
                    bail!("parameter {name}={value} is not one of {allowed:?}")
                }
                _ => {}
            }
            values.insert(name.clone(), value.clone());
        }
        Ok(values)
    }

    fn function(&self, function: &str) -> Result<&Resource> {
        let resource = self
            .resources
            .get(function)
            .with_context(|| format!("no function {function} in the template"))?;
        if resource.kind != "AWS::Serverless::Function" {
            bail!("{function} is a {}, not an AWS::Serverless::Function", resource.kind);
        }
        Ok(resource)
    }

    /// A function property as SAM sees it: the function's own, else `Globals.Function`'s.
    pub fn function_property(&self, function: &str, name: &str) -> Result<Option<&Value>> {
        let resource = self.function(function)?;
        Ok(resource.prop(name).or_else(|| self.globals_function.get(name)))
    }

    /// The function's timeout in seconds (its own, `Globals`, or Lambda's default).
    pub fn function_timeout_secs(&self, function: &str) -> Result<u64> {
        Ok(self
            .function_property(function, "Timeout")?
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_FUNCTION_TIMEOUT_SECS))
    }

    /// A function's environment variables (`Globals` merged with its own, its own winning), resolved.
    pub fn function_env(&self, function: &str, resolver: &Resolver<'_>) -> Result<BTreeMap<String, String>> {
        let resource = self.function(function)?;
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

/// A YAML scalar as CloudFormation reads it: a string.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// What a provisioned resource answers to `Ref` and `Fn::GetAtt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The template's `Conditions` (empty where only the environment is resolved).
    pub conditions: &'a BTreeMap<String, Value>,
}

/// No conditions: for resolvers of values that use none.
pub static NO_CONDITIONS: BTreeMap<String, Value> = BTreeMap::new();

/// What `AWS::NoValue` resolves to; mappings and sequences drop it.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

/// The unsupported intrinsics, refused by name rather than passed through.
/// (`Equals`, `Not`, `And`, `Or` and `Condition` are evaluated inside `Conditions` only.)
const UNSUPPORTED: &[&str] = &[
    "Equals",
    "And",
    "Or",
    "Not",
    "Condition",
    "ImportValue",
    "FindInMap",
    "GetAZs",
    "Cidr",
    "Transform",
    "ToJsonString",
    "Length",
];

impl Resolver<'_> {
    fn reference(&self, name: &str) -> Result<String> {
        match name {
            "AWS::StackName" => return Ok(self.stack_name.to_string()),
            "AWS::StackId" => {
                return Ok(format!(
                    "arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{}/local",
                    self.stack_name
                ));
            }
            "AWS::Region" => return Ok(REGION.to_string()),
            "AWS::AccountId" => return Ok(ACCOUNT_ID.to_string()),
            "AWS::Partition" => return Ok("aws".to_string()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_string()),
            "AWS::NoValue" => return Ok(NO_VALUE.to_string()),
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

    fn get_att_value(&self, inner: &Value) -> Result<String> {
        let target = match inner {
            Value::Sequence(parts) => parts
                .iter()
                .map(|p| self.string(p))
                .collect::<Result<Vec<_>>>()?
                .join("."),
            Value::String(s) => s.clone(),
            _ => bail!("GetAtt needs Resource.Attribute or [Resource, Attribute]"),
        };
        self.get_att(&target)
    }

    /// `Fn::Sub`: `${Name}`, `${Resource.Attr}`, `${!Literal}`, and the variables of the list form.
    fn sub(&self, text: &str, vars: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| anyhow!("Sub {text}: unclosed ${{"))?
                + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            } else if name.contains('.') {
                out.push_str(&self.get_att(name)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn sub_value(&self, inner: &Value) -> Result<String> {
        match inner {
            Value::String(s) => self.sub(s, &BTreeMap::new()),
            Value::Sequence(parts) => {
                let text = parts
                    .first()
                    .and_then(Value::as_str)
                    .context("Sub [string, {vars}] needs a string first")?;
                let mut vars = BTreeMap::new();
                for (k, v) in parts.get(1).and_then(Value::as_mapping).into_iter().flatten() {
                    vars.insert(scalar_string(k), self.string(v)?);
                }
                self.sub(text, &vars)
            }
            _ => bail!("Sub needs a string or [string, {{vars}}]"),
        }
    }

    fn join(&self, inner: &Value) -> Result<String> {
        let parts = inner.as_sequence().context("Join needs [separator, [values]]")?;
        let separator = parts.first().map(scalar_string).unwrap_or_default();
        let values = match parts.get(1).map(|v| self.resolve(v)).transpose()? {
            Some(Value::Sequence(values)) => values,
            _ => bail!("Join needs a list of values"),
        };
        Ok(values.iter().map(scalar_string).collect::<Vec<_>>().join(&separator))
    }

    fn select(&self, inner: &Value) -> Result<Value> {
        let parts = inner.as_sequence().context("Select needs [index, [values]]")?;
        let index: usize = self
            .string(parts.first().context("Select index")?)?
            .parse()
            .context("Select index must be a number")?;
        match parts.get(1).map(|v| self.resolve(v)).transpose()? {
            Some(Value::Sequence(values)) => values
                .get(index)
                .cloned()
                .with_context(|| format!("Select index {index} out of {} values", values.len())),
            _ => bail!("Select needs a list of values"),
        }
    }

    fn split(&self, inner: &Value) -> Result<Value> {
        let parts = inner.as_sequence().context("Split needs [separator, string]")?;
        let separator = parts.first().map(scalar_string).context("Split separator")?;
        let text = self.string(parts.get(1).context("Split string")?)?;
        Ok(Value::Sequence(
            text.split(separator.as_str())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ))
    }

    /// Applies one intrinsic function (`name` without `Fn::` or `!`).
    fn intrinsic(&self, name: &str, inner: &Value) -> Result<Value> {
        let text = |s: String| Ok(Value::String(s));
        match name {
            "Ref" => text(self.reference(&self.string(inner).context("Ref needs a name")?)?),
            "GetAtt" => text(self.get_att_value(inner)?),
            "Sub" => text(self.sub_value(inner)?),
            "Join" => text(self.join(inner)?),
            "Select" => self.select(inner),
            "Split" => self.split(inner),
            "If" => {
                let parts = inner
                    .as_sequence()
                    .filter(|p| p.len() == 3)
                    .context("Fn::If needs [condition, then, else]")?;
                let name = scalar_string(&parts[0]);
                let branch = if self.condition(&name)? { &parts[1] } else { &parts[2] };
                self.resolve(branch)
            }
            "Base64" => {
                use base64::Engine as _;
                text(base64::engine::general_purpose::STANDARD.encode(self.string(inner)?))
            }
            other if UNSUPPORTED.contains(&other) => {
                bail!("intrinsic {other} is not supported by the local stack")
            }
            other => bail!("unknown intrinsic {other}"),
        }
    }

    /// Evaluates a named condition of the `Conditions` section.
    pub fn condition(&self, name: &str) -> Result<bool> {
        let body = self
            .conditions
            .get(name)
            .with_context(|| format!("unknown condition {name}"))?;
        self.evaluate(body).with_context(|| format!("condition {name}"))
    }

    fn evaluate(&self, body: &Value) -> Result<bool> {
        let (function, inner) = match body {
            Value::Tagged(t) => (t.tag.to_string().trim_start_matches('!').to_string(), &t.value),
            Value::Mapping(m) if m.len() == 1 => {
                let (k, v) = m.iter().next().context("one entry")?;
                (scalar_string(k).trim_start_matches("Fn::").to_string(), v)
            }
            Value::Bool(b) => return Ok(*b),
            other => bail!("not a condition: {other:?}"),
        };
        let items = || inner.as_sequence().context("a list of conditions");
        Ok(match function.as_str() {
            "Equals" => {
                let pair = inner
                    .as_sequence()
                    .filter(|p| p.len() == 2)
                    .context("Fn::Equals needs two values")?;
                self.string(&pair[0])? == self.string(&pair[1])?
            }
            "Not" => !self.evaluate(items()?.first().context("Fn::Not needs a condition")?)?,
            "And" => items()?
                .iter()
                .map(|c| self.evaluate(c))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .all(|b| b),
            "Or" => items()?
                .iter()
                .map(|c| self.evaluate(c))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .any(|b| b),
            "Condition" => self.condition(&scalar_string(inner))?,
            other => bail!("{other} is not a condition function"),
        })
    }

    /// Resolves a value to a string.
    pub fn string(&self, value: &Value) -> Result<String> {
        Ok(scalar_string(&self.resolve(value)?))
    }

    /// Resolves every intrinsic function inside a value.
    pub fn resolve(&self, value: &Value) -> Result<Value> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                self.intrinsic(tag.trim_start_matches('!'), &tagged.value)
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (key, inner) = map.iter().next().context("one entry")?;
                match key.as_str() {
                    Some("Ref") => self.intrinsic("Ref", inner),
                    Some(k) if k.starts_with("Fn::") => self.intrinsic(&k["Fn::".len()..], inner),
                    _ => {
                        let mut out = serde_yaml::Mapping::new();
                        let v = self.resolve(inner)?;
                        if !is_no_value(&v) {
                            out.insert(key.clone(), v);
                        }
                        Ok(Value::Mapping(out))
                    }
                }
            }
            Value::Mapping(map) => {
                let mut out = serde_yaml::Mapping::new();
                for (k, v) in map {
                    let v = self.resolve(v)?;
                    if !is_no_value(&v) {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Value::Mapping(out))
            }
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    let v = self.resolve(v)?;
                    if !is_no_value(&v) {
                        out.push(v);
                    }
                }
                Ok(Value::Sequence(out))
            }
            other => Ok(other.clone()),
        }
    }
}

fn is_no_value(v: &Value) -> bool {
    v.as_str() == Some(NO_VALUE)
}

/// The logical id a `!GetAtt X.Arn` / `!Ref X` points at, without resolving it.
pub fn referenced_id(value: &Value) -> Option<String> {
    let (function, inner) = match value {
        Value::Tagged(t) => (t.tag.to_string().trim_start_matches('!').to_string(), &t.value),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            (k.as_str()?.trim_start_matches("Fn::").to_string(), v)
        }
        _ => return None,
    };
    match (function.as_str(), inner) {
        ("Ref", Value::String(s)) => Some(s.clone()),
        ("GetAtt", Value::String(s)) => Some(s.split('.').next().unwrap_or(s).to_string()),
        ("GetAtt", Value::Sequence(parts)) => parts.first().map(scalar_string),
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
    AllowedValues: ["on", "off"]
    Default: "off"
  Days:
    Type: Number
    Default: 30
Globals:
  Function:
    Timeout: 30
    Environment:
      Variables:
        QUEUE: !Ref Q
        MODE: !Ref Mode
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      Name: !Sub "${AWS::StackName}-q-${Mode}"
      Arn: !GetAtt Q.Arn
      Long: { "Fn::GetAtt": ["Q", "QueueName"] }
      LongRef: { "Ref": "Days" }
      Joined: !Join ["/", [a, !Ref Mode, !GetAtt Q.QueueName]]
      Vars: !Sub ["${Name}-${!Literal}-${Q.QueueName}", { Name: !Ref Days }]
      Picked: !Select [1, !Split [",", "a,b,c"]]
      Nested: { "Fn::Join": ["", [{ "Fn::Select": [0, [x, y]] }, { "Ref": "AWS::Region" }]] }
  F:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 900
      Environment:
        Variables:
          MODE: own
  G:
    Type: AWS::Serverless::Function
    Properties: {}
  Bad:
    Type: AWS::SQS::Queue
    Properties:
      Name: !If [Cond, a, b]
"#;

    fn physical() -> BTreeMap<String, Physical> {
        BTreeMap::from([(
            "Q".to_string(),
            Physical {
                id: "http://q".into(),
                attrs: BTreeMap::from([("Arn".into(), "arn:q".into()), ("QueueName".into(), "q".into())]),
            },
        )])
    }

    #[test]
    fn resolves_short_and_long_intrinsics() {
        let t = Template::parse(TEMPLATE).expect("parse");
        let params = t.parameter_values(&BTreeMap::new()).expect("defaults");
        let physical = physical();
        let r = Resolver {
            stack_name: "s",
            parameters: &params,
            physical: &physical,
            conditions: &NO_CONDITIONS,
        };
        let props = r.resolve(&t.resources["Q"].properties).expect("resolve");
        assert_eq!(props["Name"].as_str(), Some("s-q-off"));
        assert_eq!(props["Arn"].as_str(), Some("arn:q"));
        assert_eq!(props["Long"].as_str(), Some("q"));
        assert_eq!(props["LongRef"].as_str(), Some("30"));
        assert_eq!(props["Joined"].as_str(), Some("a/off/q"));
        assert_eq!(props["Vars"].as_str(), Some("30-${Literal}-q"));
        assert_eq!(props["Picked"].as_str(), Some("b"));
        assert_eq!(props["Nested"].as_str(), Some("xus-east-1"));
        assert_eq!(referenced_id(&t.resources["Q"].properties["Arn"]).as_deref(), Some("Q"));
        assert_eq!(
            referenced_id(&t.resources["Q"].properties["Long"]).as_deref(),
            Some("Q")
        );
        let err = r
            .resolve(&t.resources["Bad"].properties)
            .expect_err("an If on a condition the template lacks is refused");
        assert!(format!("{err:#}").contains("unknown condition Cond"), "{err:#}");
    }

    #[test]
    fn functions_inherit_globals_and_override_them() {
        let t = Template::parse(TEMPLATE).expect("parse");
        let params = t.parameter_values(&BTreeMap::new()).expect("defaults");
        let physical = physical();
        let r = Resolver {
            stack_name: "s",
            parameters: &params,
            physical: &physical,
            conditions: &NO_CONDITIONS,
        };
        let f = t.function_env("F", &r).expect("env");
        assert_eq!(f["QUEUE"], "http://q");
        assert_eq!(f["MODE"], "own", "the function's own variable wins");
        assert_eq!(t.function_env("G", &r).expect("env")["MODE"], "off");
        assert_eq!(t.function_timeout_secs("F").expect("timeout"), 900);
        assert_eq!(t.function_timeout_secs("G").expect("timeout"), 30);
        assert!(t.function_env("Q", &r).is_err(), "a queue is not a function");
    }

    #[test]
    fn parameters_are_checked_against_allowed_values() {
        let t = Template::parse(TEMPLATE).expect("parse");
        let on = BTreeMap::from([("Mode".to_string(), "on".to_string())]);
        assert_eq!(t.parameter_values(&on).expect("allowed")["Mode"], "on");
        let bad = BTreeMap::from([("Mode".to_string(), "maybe".to_string())]);
        assert!(t.parameter_values(&bad).is_err());
        let unknown = BTreeMap::from([("Nope".to_string(), "1".to_string())]);
        assert!(t.parameter_values(&unknown).is_err());
    }

    #[test]
    fn the_project_template_parses_and_its_functions_resolve_their_timeouts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let t = Template::load(&path).expect("load");
        assert!(t.functions().contains(&"DiscoveryFunction".to_string()));
        assert_eq!(t.function_timeout_secs("DiscoveryFunction").expect("timeout"), 900);
        assert!(t.of_kind("AWS::DynamoDB::Table").count() >= 1);
        assert_eq!(
            t.parameter_values(&BTreeMap::new()).expect("defaults")["OpenSignup"],
            "false"
        );
    }

    #[test]
    fn conditions_pick_branches_and_no_value_drops_keys_and_items() {
        let t = Template::parse(
            r#"
Parameters:
  Mode: {Type: String, Default: NONE}
Conditions:
  On: !Not [!Equals [!Ref Mode, NONE]]
  Both: !And [!Condition On, {"Fn::Equals": ["a", "a"]}]
Resources:
  B:
    Type: AWS::S3::Bucket
    Properties:
      Lock: !If [On, !Ref Mode, !Ref AWS::NoValue]
      Rules:
        - Id: always
        - !If [Both, {Id: sometimes}, !Ref AWS::NoValue]
"#,
        )
        .expect("parse");
        let physical = BTreeMap::new();
        let props = &t.resources["B"].properties;
        for (mode, on) in [("NONE", false), ("GOVERNANCE", true)] {
            let params = BTreeMap::from([("Mode".to_string(), mode.to_string())]);
            let r = Resolver {
                stack_name: "s",
                parameters: &params,
                physical: &physical,
                conditions: &t.conditions,
            };
            assert_eq!(r.condition("Both").expect("condition"), on);
            let v = r.resolve(props).expect("resolve");
            assert_eq!(v.get("Lock").map(scalar_string), on.then(|| mode.to_string()), "{mode}");
            let rules = v.get("Rules").and_then(Value::as_sequence).expect("rules");
            assert_eq!(rules.len(), if on { 2 } else { 1 }, "{mode}");
        }
        let r = Resolver {
            stack_name: "s",
            parameters: &BTreeMap::new(),
            physical: &physical,
            conditions: &NO_CONDITIONS,
        };
        assert!(r.condition("On").is_err(), "an unknown condition is an error");
    }
}
