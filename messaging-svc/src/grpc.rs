//! gRPC adapter of the messaging service.

use clawx_common::ServiceContext;
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    messaging::messaging_service_server::MessagingService,
};
use tonic::{Request, Response, Status};

pub struct MessagingGrpc {
    context: ServiceContext,
}

impl MessagingGrpc {
    pub fn new(context: ServiceContext) -> Self {
        MessagingGrpc { context }
    }
}

#[tonic::async_trait]
impl MessagingService for MessagingGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<ServiceStatus>, Status> {
        Ok(Response::new(self.context.status().await))
    }
}
