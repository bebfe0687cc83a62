//! gRPC adapter of the groups service: unwraps requests, calls the domain, converts its errors
//! to `Status` once.

use std::sync::Arc;

use clawx_common::{ServiceContext, ServiceError, auth::principal_of};
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    groups::{self as pb, groups_service_server::GroupsService},
};
use tonic::{Request, Response, Status};

use crate::domain::Groups;

pub struct GroupsGrpc {
    context: ServiceContext,
    groups: Arc<Groups>,
}

impl GroupsGrpc {
    pub fn new(context: ServiceContext, groups: Arc<Groups>) -> Self {
        GroupsGrpc { context, groups }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    principal_of(request).require_account().map_err(ServiceError::into_status)
}

#[tonic::async_trait]
impl GroupsService for GroupsGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Reply<ServiceStatus> {
        Ok(Response::new(self.context.status().await))
    }

    async fn list_groups(&self, request: Request<pb::ListGroupsRequest>) -> Reply<pb::ListGroupsResponse> {
        let message = request.into_inner();
        Ok(Response::new(self.groups.list(message.limit, message.offset, &message.search).await?))
    }

    async fn get_group(&self, request: Request<pb::GetGroupRequest>) -> Reply<pb::Group> {
        Ok(Response::new(self.groups.get(&request.into_inner().id).await?))
    }

    async fn create_group(&self, request: Request<pb::CreateGroupRequest>) -> Reply<pb::Group> {
        let account_id = account_of(&request)?;
        Ok(Response::new(self.groups.create(account_id, request.into_inner()).await?))
    }

    async fn update_group(&self, request: Request<pb::UpdateGroupRequest>) -> Reply<pb::Group> {
        let account_id = account_of(&request)?;
        Ok(Response::new(self.groups.update(account_id, request.into_inner()).await?))
    }

    async fn delete_group(&self, request: Request<pb::DeleteGroupRequest>) -> Reply<pb::DeleteGroupResponse> {
        let account_id = account_of(&request)?;
        self.groups.delete(account_id, &request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn join_group(&self, request: Request<pb::JoinGroupRequest>) -> Reply<pb::JoinGroupResponse> {
        let account_id = account_of(&request)?;
        Ok(Response::new(self.groups.join(account_id, &request.into_inner().id).await?))
    }

    async fn leave_group(&self, request: Request<pb::LeaveGroupRequest>) -> Reply<pb::LeaveGroupResponse> {
        let account_id = account_of(&request)?;
        Ok(Response::new(self.groups.leave(account_id, &request.into_inner().id).await?))
    }

    async fn send_group_message(&self, request: Request<pb::SendGroupMessageRequest>) -> Reply<pb::SendGroupMessageResponse> {
        let account_id = account_of(&request)?;
        let message = self.groups.send(account_id, request.into_inner()).await?;
        Ok(Response::new(pb::SendGroupMessageResponse { message: Some(message) }))
    }

    async fn list_group_messages(&self, request: Request<pb::ListGroupMessagesRequest>) -> Reply<pb::ListGroupMessagesResponse> {
        let account_id = account_of(&request)?;
        let messages = self.groups.messages(account_id, request.into_inner()).await?;
        Ok(Response::new(pb::ListGroupMessagesResponse { messages }))
    }
}
