//! Turns an [`ApiError`] into its HTTP response, and names the errors the server itself
//! raises (unknown path, wrong method, body limits, queue full, shutting down, missing key).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::routes::ResponseBody;
use crate::engine::{PromptError, SubmitError};
use crate::openai::ApiError;

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error_response(e: &ApiError) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    r
}

pub fn not_found(method: &str, path: &str) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        "unknown_url",
        format!("no such endpoint: {method} {path}"),
    )
}

/// 405 with the `Allow` header listing what the path takes.
pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Response<ResponseBody> {
    let e = ApiError::new(
        405,
        "invalid_request_error",
        "method_not_allowed",
        format!("{path} does not take {method}; it takes {allow}"),
    );
    let mut r = error_response(&e);
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

pub fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "invalid_request_error",
        "body_too_large",
        format!("the request body is larger than {limit} bytes"),
    )
}

pub fn body_timeout(secs: u64) -> ApiError {
    ApiError::new(
        408,
        "invalid_request_error",
        "body_timeout",
        format!("the request body did not arrive within {secs} s"),
    )
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        401,
        "authentication_error",
        "invalid_api_key",
        "this listener needs 'Authorization: Bearer <api key>'".into(),
    )
}

pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull(_) => {
            ApiError::new(429, "rate_limit_error", "queue_full", e.to_string())
        }
        SubmitError::ShuttingDown => shutting_down(),
        SubmitError::TooManyBeams { .. } => ApiError::invalid("beams", e.to_string()),
    }
}

pub fn shutting_down() -> ApiError {
    ApiError::new(
        503,
        "server_error",
        "shutting_down",
        SubmitError::ShuttingDown.to_string(),
    )
}

pub fn generation_failed(message: String) -> ApiError {
    ApiError::new(500, "server_error", "generation_failed", message)
}

/// A prompt the engine refused; `param` is `messages` or `prompt`.
pub fn prompt_error(e: PromptError, param: &str) -> ApiError {
    match e {
        PromptError::TooLong { .. } => {
            ApiError::invalid(param, e.to_string()).with_code("context_length_exceeded")
        }
        PromptError::Empty | PromptError::BadToken { .. } => {
            ApiError::invalid(param, e.to_string())
        }
        // Template rendering and tokenizing errors come from what the client sent.
        PromptError::Model(_) => ApiError::invalid(param, e.to_string()),
    }
}
