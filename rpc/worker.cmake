# Coordinator <-> worker over the internal protocol: the wire conversions, the coordinator's
# WorkerHub (Attach service + the remote Engine), and the worker's loop (`bitserve worker`).
add_library(bitserve_rpc_worker STATIC worker_protocol.cc worker_hub.cc worker.cc)
target_link_libraries(bitserve_rpc_worker PUBLIC bitserve_rpc_proto bitserve_engine_loader bitserve_metrics)

bitserve_add_test(worker_hub_test
  SRCS worker_hub_test.cc
  DEPS bitserve_rpc_worker bitserve_rpc_coordinator
  LABELS unit)

# Worker processes killed, hung and replaced under a real server, with python3-grpcio as client.
add_test(NAME worker_python_test
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/worker_python_test.py
                 --bitserve $<TARGET_FILE:bitserve>
                 --proto-dir ${BITSERVE_PROTO_SRC_DIR}
                 --protoc ${Protobuf_PROTOC_EXECUTABLE}
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(worker_python_test PROPERTIES LABELS integration TIMEOUT 300)

# Pipelines of worker processes (2 and 3 stages, int8 and bf16 transfer) against the one-process
# pipeline reference, and a stage lost and replaced.
add_test(NAME pipeline_python_test
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/pipeline_python_test.py
                 --bitserve $<TARGET_FILE:bitserve>
                 --proto-dir ${BITSERVE_PROTO_SRC_DIR}
                 --protoc ${Protobuf_PROTOC_EXECUTABLE}
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(pipeline_python_test PROPERTIES LABELS integration TIMEOUT 600)

# deploy/kubernetes/*.yaml: consistent, and their command lines serve on loopback.
add_test(NAME deploy_manifests_test
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/deploy_manifests_test.py
                 --bitserve $<TARGET_FILE:bitserve>
                 --proto-dir ${BITSERVE_PROTO_SRC_DIR}
                 --protoc ${Protobuf_PROTOC_EXECUTABLE}
         WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(deploy_manifests_test PROPERTIES LABELS integration TIMEOUT 300)
