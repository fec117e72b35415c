#Coordinator <->worker over the internal protocol : the wire conversions, the coordinator's
#WorkerHub(Attach service + the remote Engine), and the worker's loop (`bitserve worker`).
add_library(bitserve_rpc_worker STATIC
                worker_protocol.cc worker_hub.cc pipeline_assignment.cc remote_engine.cc worker.cc)
    target_link_libraries(
        bitserve_rpc_worker PUBLIC bitserve_rpc_proto bitserve_engine_loader bitserve_metrics
            bitserve_scheduler bitserve_transport bitserve_nccl_transport)

        bitserve_add_test(worker_hub_test SRCS worker_hub_test.cc worker_protocol_test.cc DEPS
                              bitserve_rpc_worker bitserve_rpc_coordinator LABELS unit)

#Worker processes killed, hung and replaced under a real server.
            bitserve_add_python_grpc_test(worker_python_test 300)
#Pipelines of worker processes(2 and 3 stages, int8 and bf16 transfer) against the one - process
#pipeline reference, and a stage lost and replaced.
                bitserve_add_python_grpc_test(pipeline_python_test 600)
# deploy/kubernetes (LeaderWorkerSet base and overlays): rendered, validated, consistent, and their
# command lines serve on loopback over TLS with an API key.
bitserve_add_python_grpc_test(deploy_manifests_test 300)
# Expert parallelism of worker processes (EP2, PP2 x EP2) against the one-process engine, bad
# input, and a rank lost and replaced.
bitserve_add_python_grpc_test(expert_parallel_python_test 600)
# Several hosts on one machine: a node per network namespace (veth links to a bridge), a pipeline
# over mutual TLS and a join secret, nodes cut off and replaced, rogue workers refused. Needs root;
# exits 77 (skipped) where namespaces are not permitted.
bitserve_add_python_grpc_test(multihost_netns_test 180)
set_tests_properties(multihost_netns_test PROPERTIES SKIP_RETURN_CODE 77)
