//! gRPC adapter of the groups service.

use clawx_common::ServiceContext;
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    groups::groups_service_server::GroupsService,
};
use tonic::{Request, Response, Status};

pub struct GroupsGrpc {
    context: ServiceContext,
}

impl GroupsGrpc {
    pub fn new(context: ServiceContext) -> Self {
        GroupsGrpc { context }
    }
}

#[tonic::async_trait]
impl GroupsService for GroupsGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<ServiceStatus>, Status> {
        Ok(Response::new(self.context.status().await))
    }
}
