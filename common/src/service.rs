//! The one service host: every Clawx service opens and migrates its database, serves health,
//! reflection and its own gRPC servers on a listener until shutdown, then closes its database.
//! A service's `run()` only builds its domain and its servers:
//!
//! ```ignore
//! clawx_common::service::serve(SERVICE, &MIGRATIONS, config.service, listener, shutdown, |context, servers| {
//!     servers.authenticated(GroupsServiceServer::new(grpc::GroupsGrpc::new(context.clone())));
//!     Ok(())
//! })
//! .await
//! ```

use std::convert::Infallible;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, interceptor::InterceptedService},
};

use crate::{Backends, InternalAuth, ServiceContext, auth::VerifyToken, config::DatabaseArgs, grpc, storage::Migrations};

/// A generated gRPC server (or one wrapped in an interceptor), as tonic routes it.
pub trait GrpcServer:
    tonic::codegen::Service<http::Request<Body>, Response: axum::response::IntoResponse, Future: Send + 'static, Error = Infallible>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcServer for S where
    S: tonic::codegen::Service<http::Request<Body>, Response: axum::response::IntoResponse, Future: Send + 'static, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What every service needs to run: its database, its cache / limiter / pub-sub and the verifier
/// of the gateway's internal tokens. Each service's `Config` embeds it.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub database: DatabaseArgs,
    pub backends: Backends,
    pub auth: InternalAuth,
}

/// The gRPC servers a service adds to its host; health reports SERVING for each of them.
#[derive(Debug)]
pub struct Servers {
    interceptor: VerifyToken,
    names: Vec<&'static str>,
    routes: Routes,
}

impl Servers {
    /// Adds a Clawx server, reachable only with an internal token for this service (the
    /// gateway's), as every `clawx.*` service is.
    pub fn authenticated<S>(&mut self, server: S) -> &mut Servers
    where
        S: GrpcServer + tonic::codegen::Service<http::Request<Body>, Response = http::Response<Body>>,
    {
        self.add(InterceptedService::new(server, self.interceptor.clone()))
    }

    /// Adds a server any client may call without an internal token, such as the XMTP node
    /// that unmodified XMTP clients use.
    pub fn open<S>(&mut self, server: S) -> &mut Servers
    where
        S: GrpcServer,
    {
        self.add(server)
    }

    fn add<S>(&mut self, server: S) -> &mut Servers
    where
        S: GrpcServer,
    {
        self.names.push(S::NAME);
        self.routes = std::mem::take(&mut self.routes).add_service(server);
        self
    }
}

/// Serves `service` on `listener` until `shutdown` fires: connects and migrates its database,
/// lets `build` add the service's servers for the opened [`ServiceContext`], serves them with
/// health (SERVING for each) and reflection, lets requests in flight finish, and closes the
/// database.
pub async fn serve(
    service: &'static str,
    migrations: &Migrations,
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    build: impl FnOnce(&ServiceContext, &mut Servers) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let context = ServiceContext::open(service, &config.database, migrations, config.backends, config.auth).await?;
    let result = serve_context(&context, listener, shutdown, build).await;
    context.database.close().await;
    result
}

async fn serve_context(
    context: &ServiceContext,
    listener: TcpListener,
    shutdown: CancellationToken,
    build: impl FnOnce(&ServiceContext, &mut Servers) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut servers = Servers { interceptor: context.auth.interceptor(context.service), names: Vec::new(), routes: Routes::default() };
    build(context, &mut servers)?;
    let (_reporter, health) = grpc::health_service(&servers.names).await;
    let (reflection_v1, reflection_v1alpha) = grpc::reflection_services()?;
    let routes = servers.routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);
    let router = grpc::server_builder().add_routes(routes);
    tracing::info!(service = context.service, address = %listener.local_addr()?, servers = ?servers.names, "serving");
    grpc::serve(router, listener, shutdown).await
}
