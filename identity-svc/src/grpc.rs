//! gRPC adapter of the identity service.

use clawx_common::ServiceContext;
use clawx_proto::{common::{GetStatusRequest, ServiceStatus}, identity::identity_service_server::IdentityService};
use tonic::{Request, Response, Status};

pub struct IdentityGrpc {
    context: ServiceContext,
}

impl IdentityGrpc {
    pub fn new(context: ServiceContext) -> Self {
        IdentityGrpc { context }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<ServiceStatus>, Status> {
        Ok(Response::new(self.context.status().await))
    }
}
