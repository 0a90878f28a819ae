//! Microsoft Graph v1.0 (§A2, §A3, §A4, §A8): bearer tokens, throttling
//! scopes, faults, and the resources themselves with opaque paging.

use crate::faults::FaultKind;
use crate::mail;
use crate::server::{Flight, Inner, Outcome, Shared, graph_error, hold};
use crate::tenant::{Site, User, UserKind};
use crate::throttle::{Refusal, Scope};
use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a `$skiptoken` stands for: the rest of a listing after one position.
#[derive(Debug, Clone)]
pub(crate) struct PageState {
    /// The listing, relative to `/v1.0/`.
    path: String,
    /// The stable key of the last item returned.
    after: u64,
    top: usize,
    select: Option<Vec<String>>,
    /// The first request's other query options (they apply to every page).
    options: Vec<(String, String)>,
}

/// Handles one Graph request: token, fault, throttle, then the resource.
/// An upload URL (`/upload/outlook/{session}`) is pre-authenticated: its
/// session names the app and the mailbox it counts against.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    segments: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    flight: &mut Flight,
) -> Outcome {
    if let ["v1.0", "users", id, _, ..] = segments {
        flight.entry.mailbox = Some(id.to_string());
    }
    let upload_session = match segments {
        ["upload", "outlook", sid] => Some(sid.to_string()),
        _ => None,
    };
    let fault;
    let mut rate_limit = None;
    let app;
    {
        let mut inner = shared.lock();
        let scope = match &upload_session {
            Some(sid) => match crate::upload::authorize(&inner, sid, headers) {
                Ok((session_app, owner)) => {
                    flight.entry.client_id = Some(session_app.clone());
                    flight.entry.mailbox = Some(owner.clone());
                    app = session_app;
                    Some(Scope::Mailbox(owner))
                }
                Err(outcome) => return outcome,
            },
            None => match bearer_app(&inner, headers, flight) {
                Ok(token_app) => {
                    app = token_app;
                    scope_of(&inner, segments)
                }
                Err(outcome) => return outcome,
            },
        };
        flight.entry.throttle_scope = scope.as_ref().map(Scope::label);
        fault = inner.faults.pick(path);
        if let Some(FaultKind::Status {
            status,
            retry_after_secs,
        }) = fault
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (code, message) = match status.as_u16() {
                429 => ("TooManyRequests", "Too many requests."),
                503 => ("serviceNotAvailable", "The service is temporarily unavailable."),
                504 => ("GatewayTimeout", "The operation timed out."),
                _ => ("generalException", "An unexpected error occurred."),
            };
            if let (Some(secs), Some(scope), 429 | 503) = (retry_after_secs, &scope, status.as_u16()) {
                let until = Instant::now() + Duration::from_secs(u64::from(secs));
                inner.throttle.close(&app, scope, until, code, message);
            }
            let mut outcome = graph_error(status, code, message);
            outcome.retry_after = retry_after_secs;
            return outcome;
        }
        if let (true, Some(scope)) = (shared.options.throttle, &scope) {
            let licensed = inner.licensed;
            let cost = ru_cost(segments, query);
            let upload = match *method {
                Method::POST | Method::PUT | Method::PATCH => body.len() as u64,
                _ => 0,
            };
            match inner
                .throttle
                .admit_upload(&app, scope, cost, upload, licensed, Instant::now())
            {
                Ok(limit) => {
                    rate_limit = limit;
                    if matches!(scope, Scope::Mailbox(_)) {
                        flight.slot = Some((app.clone(), scope.clone()));
                    }
                }
                Err(refusal) => return throttled(&refusal),
            }
        }
    }
    if let Some(FaultKind::Timeout { secs }) = fault {
        hold(secs, flight).await;
        return graph_error(
            StatusCode::GATEWAY_TIMEOUT,
            "GatewayTimeout",
            "The operation timed out.",
        );
    }
    let mut outcome = match (&upload_session, method) {
        (Some(sid), _) => crate::upload::serve(shared, method, sid, headers, body),
        (None, &Method::GET) => serve(shared, segments, query, headers),
        (None, &Method::POST | &Method::PATCH) => crate::restore::serve(shared, &app, method, segments, headers, body),
        (None, _) => method_not_allowed(method),
    };
    if let Some(limit) = rate_limit {
        outcome.headers.push(("ratelimit-limit", limit.limit.to_string()));
        outcome
            .headers
            .push(("ratelimit-remaining", limit.remaining.to_string()));
        outcome.headers.push(("ratelimit-reset", limit.reset_secs.to_string()));
    }
    outcome.truncate = fault == Some(FaultKind::Truncate);
    outcome
}

pub(crate) fn method_not_allowed(method: &Method) -> Outcome {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        &format!("The HTTP method '{method}' is not supported by the fake for this resource."),
    )
}

/// The app of a valid, unexpired bearer token, or the 401.
fn bearer_app(inner: &Inner, headers: &HeaderMap, flight: &mut Flight) -> Result<String, Outcome> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        ));
    }
    let Some(issued) = inner.tokens.get(token) else {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "CompactToken parsing failed with error code: 80049217",
        ));
    };
    flight.entry.client_id = Some(issued.client_id.clone());
    if issued.expires <= Instant::now() {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ));
    }
    Ok(issued.client_id.clone())
}

fn throttled(refusal: &Refusal) -> Outcome {
    let mut outcome = graph_error(StatusCode::TOO_MANY_REQUESTS, refusal.code, refusal.message);
    outcome.retry_after = Some(refusal.retry_after);
    outcome
}

/// What a path counts against (§A8); a UPN in the path is the same mailbox as the user's id.
fn scope_of(inner: &Inner, segments: &[&str]) -> Option<Scope> {
    match segments {
        ["v1.0", "users", id, resource, ..] => match *resource {
            "mailboxSettings"
            | "mailFolders"
            | "messages"
            | "contactFolders"
            | "contacts"
            | "calendar"
            | "calendars"
            | "events"
            | "calendarView"
            | "outlook"
            | "inferenceClassification" => {
                let id = inner
                    .find_user(id)
                    .map(|u| u.id.clone())
                    .unwrap_or_else(|| id.to_ascii_lowercase());
                Some(Scope::Mailbox(id))
            }
            "drive" | "drives" => Some(Scope::SharePoint),
            _ => None,
        },
        ["v1.0", "sites", ..] | ["v1.0", "drives", ..] => Some(Scope::SharePoint),
        _ => None,
    }
}

/// Resource units of a SharePoint/OneDrive request (§A8): 1 for a single item,
/// 2 for a list or a delta without a token, 5 with permissions.
fn ru_cost(segments: &[&str], query: Option<&str>) -> u64 {
    let query = query.unwrap_or_default();
    if query.contains("permissions") || segments.last() == Some(&"permissions") {
        return 5;
    }
    match segments {
        [.., "getAllSites" | "drives" | "children" | "sites"] => 2,
        [.., "delta"] if !query.contains("token=") => 2,
        _ => 1,
    }
}

fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

// ----- resources -----

/// Every property a user can `$select` (others give 400).
const USER_PROPS: &[&str] = &[
    "id",
    "accountEnabled",
    "assignedLicenses",
    "assignedPlans",
    "businessPhones",
    "createdDateTime",
    "creationType",
    "displayName",
    "externalUserState",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "proxyAddresses",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// What Graph returns for a user without `$select` (v1.0 `user-list` docs):
/// `accountEnabled`, `userType` and `assignedPlans` need a `$select`.
const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

const SITE_PROPS: &[&str] = &[
    "id",
    "name",
    "displayName",
    "description",
    "webUrl",
    "createdDateTime",
    "lastModifiedDateTime",
    "siteCollection",
    "root",
];

const EXCHANGE_PLAN: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";
const SHAREPOINT_PLAN: &str = "5dbe027f-2339-4123-9542-606e4d348a72";
const E3_SKU: &str = "05e9a617-0261-4cee-bb44-138d3ef5d965";

fn user_json(u: &User) -> Value {
    let assigned = "2024-01-15T09:00:00Z";
    let licensed = u.kind.licensed();
    let plans = if licensed {
        json!([
            {"assignedDateTime": assigned, "capabilityStatus": "Enabled", "service": "exchange", "servicePlanId": EXCHANGE_PLAN},
            {"assignedDateTime": assigned, "capabilityStatus": "Enabled", "service": "SharePoint", "servicePlanId": SHAREPOINT_PLAN},
        ])
    } else {
        json!([])
    };
    let licenses = if licensed {
        json!([{"disabledPlans": [], "skuId": E3_SKU}])
    } else {
        json!([])
    };
    let person = !matches!(u.kind, UserKind::SharedMailbox);
    let mut names = u.display_name.split_whitespace();
    let (given, surname) = match (person, names.next(), names.next()) {
        (true, Some(g), Some(s)) => (json!(g), json!(s)),
        _ => (Value::Null, Value::Null),
    };
    let guest = u.kind == UserKind::Guest;
    let nickname = u.user_principal_name.split('@').next().unwrap_or_default();
    json!({
        "id": u.id,
        "accountEnabled": u.kind.account_enabled(),
        "assignedLicenses": licenses,
        "assignedPlans": plans,
        "businessPhones": [],
        "createdDateTime": "2023-06-01T08:00:00Z",
        "creationType": if guest { json!("Invitation") } else { Value::Null },
        "displayName": u.display_name,
        "externalUserState": if guest { json!("Accepted") } else { Value::Null },
        "givenName": given,
        "jobTitle": Value::Null,
        "mail": u.mail,
        "mailNickname": nickname,
        "mobilePhone": Value::Null,
        "officeLocation": Value::Null,
        "preferredLanguage": if person && !guest { json!("en-US") } else { Value::Null },
        "proxyAddresses": u.mail.iter().map(|m| format!("SMTP:{m}")).collect::<Vec<_>>(),
        "surname": surname,
        "usageLocation": if licensed { json!("US") } else { Value::Null },
        "userPrincipalName": u.user_principal_name,
        "userType": if guest { "Guest" } else { "Member" },
    })
}

fn site_json(s: &Site, root: bool) -> Value {
    let host = s
        .web_url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "displayName": s.display_name,
        "description": "",
        "webUrl": s.web_url,
        "createdDateTime": "2023-03-01T10:00:00Z",
        "lastModifiedDateTime": "2025-11-20T16:30:00Z",
        "siteCollection": {"hostname": host},
    });
    if root {
        v["root"] = json!({});
    }
    v
}

fn site_drive_json(s: &Site) -> Value {
    json!({
        "id": site_drive_id(s),
        "driveType": "documentLibrary",
        "name": "Documents",
        "description": "",
        "createdDateTime": "2023-03-01T10:00:00Z",
        "lastModifiedDateTime": "2025-11-20T16:30:00Z",
        "webUrl": format!("{}/Shared%20Documents", s.web_url),
        "owner": {"group": {"id": s.id.split(',').nth(1).unwrap_or_default(), "displayName": s.display_name}},
        "quota": {"deleted": 0, "remaining": 27_487_790_694_400u64, "state": "normal", "total": 27_487_790_694_400u64, "used": 0},
    })
}

fn site_drive_id(s: &Site) -> String {
    format!("b!{}", s.id.split(',').skip(1).collect::<String>().replace('-', ""))
}

fn user_drive_json(u: &User, domain: &str) -> Value {
    let personal = u.user_principal_name.replace(['@', '.', '#'], "_");
    let host = format!("{}-my.sharepoint.com", domain.split('.').next().unwrap_or("contoso"));
    json!({
        "id": u.drive_id,
        "driveType": "business",
        "name": "OneDrive",
        "description": "",
        "createdDateTime": "2023-06-01T08:05:00Z",
        "lastModifiedDateTime": "2025-11-20T16:30:00Z",
        "webUrl": format!("https://{host}/personal/{personal}/Documents"),
        "owner": {"user": {"id": u.id, "displayName": u.display_name, "email": u.mail}},
        "quota": {"deleted": 0, "remaining": 1_099_511_627_776u64, "state": "normal", "total": 1_099_511_627_776u64, "used": 0},
    })
}

fn mailbox_settings_json(u: &User) -> Value {
    json!({
        "archiveFolder": format!("AAMkA{}AAA=", u.id.replace('-', "")),
        "timeZone": "UTC",
        "automaticRepliesSetting": {
            "status": "disabled",
            "externalAudience": "all",
            "internalReplyMessage": "",
            "externalReplyMessage": "",
            "scheduledStartDateTime": {"dateTime": "2026-01-01T00:00:00.0000000", "timeZone": "UTC"},
            "scheduledEndDateTime": {"dateTime": "2026-01-02T00:00:00.0000000", "timeZone": "UTC"},
        },
        "dateFormat": "M/d/yyyy",
        "timeFormat": "h:mm tt",
        "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        "language": {"locale": "en-US", "displayName": "English (United States)"},
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": "UTC"},
        },
        "userPurpose": if u.kind == UserKind::SharedMailbox { "shared" } else { "user" },
    })
}

/// The `$select` list, matched without case to the known properties (`id` always).
fn parse_select(raw: &str, known: Option<&[&str]>, type_name: &str) -> Result<Vec<String>, Outcome> {
    let mut fields = vec!["id".to_string()];
    for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let name = match known {
            None => f.to_string(),
            Some(known) => match known.iter().find(|k| k.eq_ignore_ascii_case(f)) {
                Some(k) => k.to_string(),
                None => {
                    return Err(graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!("Could not find a property named '{f}' on type '{type_name}'."),
                    ));
                }
            },
        };
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    Ok(fields)
}

fn project(v: &Value, fields: Option<&[String]>) -> Value {
    let Some(fields) = fields else { return v.clone() };
    let mut out = Map::new();
    for f in fields {
        match v.get(f) {
            Some(x) => {
                out.insert(f.clone(), x.clone());
            }
            // A resource without an id (mailboxSettings) does not get one.
            None if f == "id" => {}
            None => {
                out.insert(f.clone(), Value::Null);
            }
        }
    }
    Value::Object(out)
}

fn project_default(v: &Value, fields: &[&str]) -> Value {
    let mut out = Map::new();
    for f in fields {
        out.insert(f.to_string(), v.get(*f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn parse_top(p: &HashMap<String, String>, default: usize) -> Result<usize, Outcome> {
    match p.get("$top") {
        None => Ok(default),
        Some(t) => match t.trim().parse::<i64>() {
            Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
            _ => Err(graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &format!("Invalid page size specified: '{t}'. Must be between 1 and 999 inclusive."),
            )),
        },
    }
}

/// One collection to page through.
struct Listing<'a> {
    /// Relative to `/v1.0/`, e.g. `users`.
    path: String,
    /// The `$metadata#...` fragment, e.g. `users`.
    context: String,
    /// For `$select` errors, e.g. `microsoft.graph.user`.
    type_name: &'a str,
    default_top: usize,
    /// Properties `$select` may name (None: any).
    known: Option<&'a [&'a str]>,
    /// Properties returned without `$select` (None: all).
    default_fields: Option<&'a [&'a str]>,
}

/// Options that are not paging options: kept in the state of every page.
fn other_options(p: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "$skiptoken" | "$top" | "$select"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort();
    v
}

/// The options of a request; on a `$skiptoken` page, the first request's options too.
fn effective_params(inner: &Inner, query: Option<&str>) -> HashMap<String, String> {
    let mut p = params(query);
    if let Some(state) = p.get("$skiptoken").and_then(|t| inner.pages.get(t)) {
        for (k, v) in state.options.clone() {
            p.entry(k).or_insert(v);
        }
    }
    p
}

/// A page of `items` (each with a stable, increasing key), rendered by
/// `render`, and an opaque `@odata.nextLink`; the state behind it goes into `pages`.
fn page<T>(
    pages: &mut HashMap<String, PageState>,
    base: &str,
    listing: Listing<'_>,
    items: Vec<(u64, T)>,
    render: impl Fn(&T) -> Value,
    p: &HashMap<String, String>,
) -> Outcome {
    let state = match p.get("$skiptoken") {
        Some(token) => match pages.get(token) {
            Some(s) if s.path == listing.path => s.clone(),
            _ => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "The specified page token value has expired or is invalid.",
                );
            }
        },
        None => {
            let top = match parse_top(p, listing.default_top) {
                Ok(t) => t,
                Err(e) => return e,
            };
            let select = match p.get("$select") {
                Some(raw) => match parse_select(raw, listing.known, listing.type_name) {
                    Ok(s) => Some(s),
                    Err(e) => return e,
                },
                None => None,
            };
            PageState {
                path: listing.path.clone(),
                after: 0,
                top,
                select,
                options: other_options(p),
            }
        }
    };
    let mut rest: Vec<(u64, T)> = items.into_iter().filter(|(k, _)| *k > state.after).collect();
    rest.sort_by_key(|(k, _)| *k);
    let more = rest.len() > state.top;
    rest.truncate(state.top);
    let value: Vec<Value> = rest
        .iter()
        .map(|(_, item)| {
            let v = render(item);
            match (&state.select, listing.default_fields) {
                (Some(fields), _) => project(&v, Some(fields)),
                (None, Some(default)) => project_default(&v, default),
                (None, None) => v,
            }
        })
        .collect();
    let context = match &state.select {
        Some(fields) => format!("{base}/v1.0/$metadata#{}({})", listing.context, fields[1..].join(",")),
        None => format!("{base}/v1.0/$metadata#{}", listing.context),
    };
    let mut body = json!({"@odata.context": context, "value": value});
    if let (true, Some((last, _))) = (more, rest.last()) {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            [
                uuid::Uuid::new_v4().as_bytes().as_slice(),
                uuid::Uuid::new_v4().as_bytes(),
            ]
            .concat(),
        );
        let mut link = format!("{base}/v1.0/{}?", listing.path);
        for (k, v) in &state.options {
            link.push_str(&format!("{k}={}&", urlencoding::encode(v)));
        }
        if let Some(fields) = &state.select {
            link.push_str(&format!("$select={}&", urlencoding::encode(&fields[1..].join(","))));
        }
        link.push_str(&format!("$top={}&$skiptoken={token}", state.top));
        body["@odata.nextLink"] = json!(link);
        pages.insert(token, PageState { after: *last, ..state });
    }
    Outcome::ok(body)
}

/// One entity, with `$select` and its `@odata.context`.
fn entity(
    base: &str,
    context: &str,
    v: Value,
    p: &HashMap<String, String>,
    known: Option<&[&str]>,
    type_name: &str,
    default_fields: Option<&[&str]>,
) -> Outcome {
    let mut v = match (p.get("$select"), default_fields) {
        (Some(raw), _) => match parse_select(raw, known, type_name) {
            Ok(fields) => project(&v, Some(&fields)),
            Err(e) => return e,
        },
        (None, Some(default)) => project_default(&v, default),
        (None, None) => v,
    };
    if let Some(map) = v.as_object_mut() {
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!("{base}/v1.0/$metadata#{context}")),
        );
        out.extend(std::mem::take(map));
        *map = out;
    }
    Outcome::ok(v)
}

pub(crate) fn user_not_found(id: &str) -> Outcome {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

pub(crate) fn no_mailbox() -> Outcome {
    graph_error(
        StatusCode::NOT_FOUND,
        "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    )
}

pub(crate) fn item_not_found() -> Outcome {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn site_not_found() -> Outcome {
    graph_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "Requested site could not be found",
    )
}

fn serve(shared: &Shared, segments: &[&str], query: Option<&str>, headers: &HeaderMap) -> Outcome {
    let mut inner = shared.lock();
    let base = shared.base_url.as_str();
    let p = effective_params(&inner, query);
    if let ["v1.0", "users", id, "mailFolders" | "messages", ..] = segments {
        return serve_mail(&mut inner, base, id, segments, &p, headers);
    }
    let site_by_id = |inner: &Inner, id: &str| -> Option<(Site, bool)> {
        let sites = &inner.tenant.sites;
        match id {
            "root" => sites.first().map(|s| (s.clone(), true)),
            _ => sites
                .iter()
                .position(|s| s.id.eq_ignore_ascii_case(id))
                .map(|i| (sites[i].clone(), i == 0)),
        }
    };
    match segments {
        ["v1.0", "users"] => {
            let Inner {
                tenant,
                user_order,
                pages,
                ..
            } = &mut *inner;
            let items: Vec<(u64, &User)> = tenant
                .users
                .iter()
                .map(|u| (user_order.get(&u.id).copied().unwrap_or(u64::MAX), u))
                .collect();
            let listing = Listing {
                path: "users".into(),
                context: "users".into(),
                type_name: "microsoft.graph.user",
                default_top: 100,
                known: Some(USER_PROPS),
                default_fields: Some(USER_DEFAULT),
            };
            page(pages, base, listing, items, |u| user_json(u), &p)
        }
        ["v1.0", "users", id] => match inner.find_user(id) {
            Some(u) => entity(
                base,
                "users/$entity",
                user_json(u),
                &p,
                Some(USER_PROPS),
                "microsoft.graph.user",
                Some(USER_DEFAULT),
            ),
            None => user_not_found(id),
        },
        ["v1.0", "users", id, "mailboxSettings"] => match inner.find_user(id) {
            None => user_not_found(id),
            Some(u) if !u.kind.has_mailbox() => no_mailbox(),
            Some(u) => entity(
                base,
                &format!("users('{}')/mailboxSettings", u.id),
                mailbox_settings_json(u),
                &p,
                None,
                "microsoft.graph.mailboxSettings",
                None,
            ),
        },
        ["v1.0", "users", id, "drive"] => match inner.find_user(id) {
            None => user_not_found(id),
            Some(u) if !u.kind.has_onedrive() => graph_error(StatusCode::NOT_FOUND, "itemNotFound", "Item not found"),
            Some(u) => entity(
                base,
                "drives/$entity",
                user_drive_json(u, &inner.tenant.domain),
                &p,
                None,
                "microsoft.graph.drive",
                None,
            ),
        },
        ["v1.0", "drives", id] => {
            let t = &inner.tenant;
            let drive = t
                .users
                .iter()
                .find(|u| u.kind.has_onedrive() && u.drive_id == *id)
                .map(|u| user_drive_json(u, &t.domain))
                .or_else(|| t.sites.iter().find(|s| site_drive_id(s) == *id).map(site_drive_json));
            match drive {
                Some(d) => entity(base, "drives/$entity", d, &p, None, "microsoft.graph.drive", None),
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "itemNotFound",
                    "The resource could not be found.",
                ),
            }
        }
        ["v1.0", "sites", "getAllSites"] => {
            let Inner { tenant, pages, .. } = &mut *inner;
            let root_id = tenant.sites.first().map(|s| s.id.clone()).unwrap_or_default();
            let items: Vec<(u64, &Site)> = tenant
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64 + 1, s))
                .collect();
            let listing = Listing {
                path: "sites/getAllSites".into(),
                context: "sites".into(),
                type_name: "microsoft.graph.site",
                default_top: 200,
                known: Some(SITE_PROPS),
                default_fields: None,
            };
            page(pages, base, listing, items, |s| site_json(s, s.id == root_id), &p)
        }
        ["v1.0", "sites", id] => match site_by_id(&inner, id) {
            Some((s, root)) => entity(
                base,
                "sites/$entity",
                site_json(&s, root),
                &p,
                Some(SITE_PROPS),
                "microsoft.graph.site",
                None,
            ),
            None => site_not_found(),
        },
        ["v1.0", "sites", id, "drive"] => match site_by_id(&inner, id) {
            Some((s, _)) => entity(
                base,
                "drives/$entity",
                site_drive_json(&s),
                &p,
                None,
                "microsoft.graph.drive",
                None,
            ),
            None => site_not_found(),
        },
        ["v1.0", "sites", id, "drives"] => match site_by_id(&inner, id) {
            Some((s, _)) => {
                let listing = Listing {
                    path: format!("sites/{id}/drives"),
                    context: "drives".into(),
                    type_name: "microsoft.graph.drive",
                    default_top: 200,
                    known: None,
                    default_fields: None,
                };
                page(&mut inner.pages, base, listing, vec![(1, s)], site_drive_json, &p)
            }
            None => site_not_found(),
        },
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.last().copied().unwrap_or_default()
            ),
        ),
    }
}

fn max_page_size(headers: &HeaderMap) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|v| {
            v.trim()
                .strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.parse::<usize>().ok())
        })
        .unwrap_or(10)
        .clamp(1, 1000)
}

/// Mail folders, message delta and MIME (saas-apis.md §A4).
fn serve_mail(
    inner: &mut Inner,
    base: &str,
    user: &str,
    segments: &[&str],
    p: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Outcome {
    let Some(owner) = inner.find_user(user).map(|u| u.id.clone()) else {
        return user_not_found(user);
    };
    let Inner { mailboxes, pages, .. } = inner;
    let Some(mailbox) = mailboxes.get(&owner) else {
        return no_mailbox();
    };
    let hidden = p.get("includeHiddenFolders").is_some_and(|v| v == "true");
    let not_found = item_not_found;
    let user_base = format!("{base}/v1.0/users/{user}");
    let folder_listing = |path: String| Listing {
        path,
        context: format!("users('{owner}')/mailFolders"),
        type_name: "microsoft.graph.mailFolder",
        default_top: 10,
        known: None,
        default_fields: None,
    };
    match &segments[3..] {
        ["mailFolders"] => {
            let folders: Vec<(u64, &mail::Folder)> = mailbox
                .folders
                .iter()
                .enumerate()
                .filter(|(_, f)| f.parent_id.is_none() && (hidden || !f.hidden))
                .map(|(i, f)| (i as u64 + 1, f))
                .collect();
            let listing = folder_listing(format!("users/{user}/mailFolders"));
            page(pages, base, listing, folders, |f| mailbox.folder_json(f), p)
        }
        ["mailFolders", fid, "childFolders"] => {
            if !mailbox.folders.iter().any(|f| f.id == *fid) {
                return not_found();
            }
            let folders: Vec<(u64, &mail::Folder)> = mailbox
                .folders
                .iter()
                .enumerate()
                .filter(|(_, f)| f.parent_id.as_deref() == Some(*fid) && (hidden || !f.hidden))
                .map(|(i, f)| (i as u64 + 1, f))
                .collect();
            let listing = folder_listing(format!("users/{user}/mailFolders/{fid}/childFolders"));
            page(pages, base, listing, folders, |f| mailbox.folder_json(f), p)
        }
        ["mailFolders", fid, "messages", "delta"] => {
            if !mailbox.folders.iter().any(|f| f.id == *fid) {
                return not_found();
            }
            let page_size = max_page_size(headers);
            let now = mailbox.current_seq();
            let state = match (p.get("$skiptoken"), p.get("$deltatoken")) {
                (Some(t), _) => mail::SyncState::decode(t),
                (None, Some(t)) => mail::SyncState::decode(t).map(|s| mail::SyncState {
                    upto: now,
                    after_created: 0,
                    after_removal: 0,
                    ..s
                }),
                (None, None) => Some(mail::SyncState {
                    since: 0,
                    upto: now,
                    after_created: 0,
                    after_removal: 0,
                    page: page_size,
                }),
            };
            let Some(mut state) = state else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQuery",
                    "The sync state is malformed.",
                );
            };
            if state.since > 0 && state.since < mailbox.oldest_sync_state {
                return graph_error(
                    StatusCode::GONE,
                    "syncStateNotFound",
                    "The sync state generation is not found; start a full synchronization.",
                );
            }
            state.page = page_size;
            let (values, next) = mail::delta_page(mailbox, fid, &state);
            let (name, link) = match next {
                Some(next) => (
                    "@odata.nextLink",
                    format!(
                        "{user_base}/mailFolders/{fid}/messages/delta?$skiptoken={}",
                        next.encode()
                    ),
                ),
                None => {
                    let next = mail::SyncState {
                        since: state.upto,
                        upto: 0,
                        after_created: 0,
                        after_removal: 0,
                        page: page_size,
                    };
                    (
                        "@odata.deltaLink",
                        format!(
                            "{user_base}/mailFolders/{fid}/messages/delta?$deltatoken={}",
                            next.encode()
                        ),
                    )
                }
            };
            let mut body =
                json!({"@odata.context": format!("{base}/v1.0/$metadata#Collection(message)"), "value": values});
            body[name] = json!(link);
            Outcome::ok(body)
        }
        ["messages", mid] => match mailbox.items.iter().find(|m| m.id == *mid) {
            Some(m) => Outcome::ok(mail::message_json(m)),
            None => not_found(),
        },
        ["messages", mid, "$value"] => match mailbox.items.iter().find(|m| m.id == *mid) {
            Some(m) => Outcome::raw(m.mime.clone(), "text/plain"),
            None => not_found(),
        },
        ["messages", mid, "attachments"] => match mailbox.items.iter().find(|m| m.id == *mid) {
            Some(m) => {
                let value: Vec<Value> = m
                    .attachments
                    .iter()
                    .enumerate()
                    .map(|(i, a)| mail::attachment_json(&m.id, i, a, true))
                    .collect();
                Outcome::ok(json!({
                    "@odata.context": format!("{base}/v1.0/$metadata#users('{owner}')/messages('{mid}')/attachments"),
                    "value": value,
                }))
            }
            None => not_found(),
        },
        ["messages", mid, "attachments", aid] => {
            let found = mailbox.items.iter().find(|m| m.id == *mid).and_then(|m| {
                (0..m.attachments.len())
                    .find(|i| mail::attachment_id(&m.id, *i) == *aid)
                    .map(|i| mail::attachment_json(&m.id, i, &m.attachments[i], true))
            });
            found.map(Outcome::ok).unwrap_or_else(not_found)
        }
        _ => graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unsupported mail resource."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_unit_costs() {
        assert_eq!(ru_cost(&["v1.0", "users", "u", "drive"], None), 1);
        assert_eq!(ru_cost(&["v1.0", "sites", "getAllSites"], Some("$top=200")), 2);
        assert_eq!(ru_cost(&["v1.0", "drives", "d", "root", "delta"], None), 2);
        assert_eq!(ru_cost(&["v1.0", "drives", "d", "root", "delta"], Some("token=abc")), 1);
        assert_eq!(
            ru_cost(&["v1.0", "drives", "d", "items", "i"], Some("$expand=permissions")),
            5
        );
    }

    #[test]
    fn select_is_case_insensitive_and_checked() {
        let fields = parse_select("displayname, MAIL,id", Some(USER_PROPS), "microsoft.graph.user").expect("known");
        assert_eq!(fields, ["id", "displayName", "mail"]);
        let err = parse_select("nope", Some(USER_PROPS), "microsoft.graph.user").expect_err("unknown");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            err.body["error"]["message"],
            "Could not find a property named 'nope' on type 'microsoft.graph.user'."
        );
    }
}
