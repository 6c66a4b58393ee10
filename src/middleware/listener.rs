//! Two listeners, one application: with `SWITCHBOARD_ADMIN_BIND` set,
//! `/metrics`, `/stats` and `/debug/*` are served only on the admin
//! listener (an address operators keep off the public network), the API
//! only on the public one, and the probes on both.
//!
//! actix-web builds each worker's application once per listener; the
//! listener a request came in on is its application's local address.
//! [`mark`] notes it on the request before routing, and each resource's
//! [`Surface`] guard lets routing match it only on its listeners, so a
//! route asked on the other listener is an unknown path there (404).

use std::net::SocketAddr;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::guard::GuardContext;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};

/// The admin listener's address, if it is set (application data).
#[derive(Debug, Clone, Copy)]
pub struct AdminListener(pub Option<SocketAddr>);

/// Which listener a request came in on (set only when there are two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

/// Where a resource is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Surface {
    /// The API: the public listener.
    #[default]
    Public,
    /// The operators' routes: the admin listener, when there is one.
    Admin,
    /// The probes: every listener.
    Both,
}

impl Surface {
    /// Whether routing may match the resource for this request.
    pub fn serves(self, ctx: &GuardContext<'_>) -> bool {
        match (ctx.req_data().get::<Listener>(), self) {
            (None, _) | (Some(_), Surface::Both) => true,
            (Some(listener), surface) => {
                (*listener == Listener::Admin) == (surface == Surface::Admin)
            }
        }
    }
}

/// Whether the request came in on the admin listener.
pub fn on_admin(req: &ServiceRequest) -> bool {
    req.extensions().get::<Listener>() == Some(&Listener::Admin)
}

/// Notes which listener the request came in on, before routing.
pub async fn mark(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some(AdminListener(Some(admin))) = req.app_data::<AdminListener>() {
        let listener = if req.app_config().local_addr() == *admin {
            Listener::Admin
        } else {
            Listener::Public
        };
        req.extensions_mut().insert(listener);
    }
    next.call(req).await
}
