//! gRPC adapter of the verify service.

use clawx_common::ServiceContext;
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    verify::verify_service_server::VerifyService,
};
use tonic::{Request, Response, Status};

pub struct VerifyGrpc {
    context: ServiceContext,
}

impl VerifyGrpc {
    pub fn new(context: ServiceContext) -> Self {
        VerifyGrpc { context }
    }
}

#[tonic::async_trait]
impl VerifyService for VerifyGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<ServiceStatus>, Status> {
        Ok(Response::new(self.context.status().await))
    }
}
