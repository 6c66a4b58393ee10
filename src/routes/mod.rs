//! HTTP routes, one module per resource. Handlers are thin: extract, build a
//! message, send it to an actor, map the reply to a response.

pub mod debug;
pub mod fetch;
pub mod health;
pub mod hello;
pub mod metrics;
pub mod openapi;
pub mod users;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use std::io;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{
    guard, web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, ResponseError,
};

use crate::auth::Access;
use crate::error::ApiError;
use crate::middleware::guards::{self, QueryParams};
use crate::middleware::listener::Surface;
use crate::middleware::request_context::{loggable, RouteLabel, UNMATCHED};

/// What each route asks of a request's token once access control is on
/// (the others are open), as the routes and the API description say it.
pub const PROTECTED: [(&str, Access); 9] = [
    ("/users", Access::Users),
    ("/users/{id}", Access::Users),
    ("/fetch", Access::Fetch),
    ("/hello", Access::Token),
    ("/hello/{name}", Access::Token),
    ("/metrics", Access::Admin),
    ("/stats", Access::Admin),
    ("/debug/crash/{actor}", Access::Admin),
    ("/debug/slow/{ms}", Access::Admin),
];

/// What the route at `path` asks of a token; `None`: open.
pub fn access(path: &str) -> Option<Access> {
    PROTECTED
        .iter()
        .find(|(protected, _)| *protected == path)
        .map(|(_, access)| *access)
}

/// Registers every route; the fault drills only when `chaos` is on.
pub fn configure(cfg: &mut web::ServiceConfig, chaos: bool) {
    cfg.service(Endpoint::new("/health").get(health::health).probe())
        .service(Endpoint::new("/ready").get(health::ready).probe())
        .service(Endpoint::new("/metrics").get(metrics::metrics).scrape())
        .service(Endpoint::new("/stats").get(metrics::stats).guarded())
        .service(Endpoint::new("/hello").get(hello::anonymous).guarded())
        .service(Endpoint::new("/hello/{name}").get(hello::named).guarded())
        .service(
            Endpoint::new("/users")
                .get(users::list)
                .route(Method::POST, users::create)
                .query(users::LIST_QUERY)
                .guarded(),
        )
        .service(
            Endpoint::new("/fetch")
                .route(Method::POST, fetch::fetch)
                .guarded(),
        )
        .service(
            Endpoint::new("/users/{id}")
                .get(users::get)
                .route(Method::PATCH, users::update)
                .route(Method::DELETE, users::delete)
                .guarded(),
        )
        .service(
            Endpoint::new("/openapi.json")
                .get(openapi::document)
                .guarded(),
        );
    if chaos {
        cfg.service(
            Endpoint::new("/debug/crash/{actor}")
                .route(Method::POST, debug::crash)
                .guarded(),
        )
        .service(Endpoint::new("/debug/slow/{ms}").get(debug::slow).guarded());
    }
    // Last, so that they match only what nothing else does.
    cfg.configure(openapi::docs).service(unmatched());
}

/// The methods a resource takes, as `Allow` lists them.
#[derive(Debug, Clone)]
struct Allow(HeaderValue);

/// A resource being registered: its handlers, the methods they take, and
/// the listeners it is served on.
struct Endpoint {
    resource: Resource,
    methods: Vec<Method>,
    surface: Surface,
}

impl Endpoint {
    /// A resource labelled with its path template for logs and metrics,
    /// carrying what it asks of a token ([`PROTECTED`]); the operators'
    /// routes are served on the admin listener when there is one.
    fn new(path: &'static str) -> Self {
        let mut resource = web::resource(path).app_data(RouteLabel(path));
        let access = access(path);
        if let Some(access) = access {
            resource = resource.app_data(access);
        }
        Self {
            resource,
            methods: Vec::new(),
            surface: match access {
                Some(Access::Admin) => Surface::Admin,
                _ => Surface::Public,
            },
        }
    }

    /// `handler` for `method`.
    fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self
            .resource
            .route(web::route().method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    /// `handler` for GET, and for HEAD (actix-web sends HEAD's answer
    /// without its body).
    fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args> + Clone,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler.clone())
            .route(Method::HEAD, handler)
    }

    /// Data its handlers extract.
    fn data<T: 'static>(mut self, data: T) -> Self {
        self.resource = self.resource.app_data(data);
        self
    }

    fn query(mut self, params: &'static [&'static str]) -> Self {
        self.resource = self.resource.app_data(QueryParams(params));
        self
    }

    /// The resource: `OPTIONS` says what it allows, any other method it
    /// does not take is a 405 naming them, and routing matches it only on
    /// its listeners.
    fn open(self) -> Resource {
        let allow: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        let allow = format!("{}, OPTIONS", allow.join(", "));
        let allow = HeaderValue::from_str(&allow).expect("method names are header text");
        let surface = self.surface;
        self.resource
            .guard(guard::fn_guard(move |ctx| surface.serves(ctx)))
            .app_data(Allow(allow))
            .route(web::route().method(Method::OPTIONS).to(options))
            .default_service(web::to(method_not_allowed))
    }

    /// A probe: outside the guards (probes must always answer), on every
    /// listener.
    fn probe(mut self) -> Resource {
        self.surface = Surface::Both;
        self.open()
    }

    /// The scrape: outside the guards (not rate limited), but it needs an
    /// `admin` token when it shares the API's listener and access control
    /// is on.
    fn scrape(
        self,
    ) -> Resource<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        self.open().wrap(from_fn(guards::authorized_at_once))
    }

    /// The resource behind the guards: body limits, load shedding, access
    /// control, rate limit, known query parameters and the deadline.
    fn guarded(
        self,
    ) -> Resource<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        self.open().wrap(from_fn(guards::guards))
    }
}

/// `OPTIONS`: what the resource allows, and nothing else (a CORS preflight,
/// when CORS is on, is answered before it gets here).
async fn options(req: HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    if let Some(Allow(methods)) = req.app_data::<Allow>() {
        response.insert_header((header::ALLOW, methods.clone()));
    }
    response.finish()
}

/// Every path no route matches, behind the guards like every route: a flood
/// of 404s is limited like anything else. One route label for all of them,
/// so no client can grow the label set.
fn unmatched() -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource("/{path:.*}")
        .app_data(RouteLabel(UNMATCHED))
        .default_service(web::to(no_route))
        .wrap(from_fn(guards::guards))
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    let path = loggable(req.path());
    ApiError::NotFound(format!("no route for {} {path}", req.method())).error_response()
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
    if let Some(Allow(methods)) = req.app_data::<Allow>() {
        response
            .headers_mut()
            .insert(header::ALLOW, methods.clone());
    }
    response
}

/// How body, query and path extraction failures reach the client.
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge(limit),
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "the body must be JSON (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("malformed JSON: {e}")),
        JsonPayloadError::Payload(PayloadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            ApiError::BodyTimeout
        }
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    }
    .into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query string: {err}")).into()
}

pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {err}")).into()
}
