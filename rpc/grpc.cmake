# The gRPC protocols (public bitserve.v1, internal worker protocol), the public service, its
# server (with health checking and reflection) and the C++ client.
#
# Debian 12 ships gRPC's CMake package (gRPC::grpc++, gRPC::grpc_cpp_plugin); where a gRPC build
# lacks it, pkg-config's grpc++ and the plugin on PATH are used instead.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG QUIET)
if(TARGET gRPC::grpc++ AND TARGET gRPC::grpc++_reflection AND TARGET gRPC::grpc_cpp_plugin)
  set(BITSERVE_GRPCPP gRPC::grpc++)
  set(BITSERVE_GRPCPP_REFLECTION gRPC::grpc++_reflection)
  get_target_property(BITSERVE_GRPC_CPP_PLUGIN gRPC::grpc_cpp_plugin IMPORTED_LOCATION_NONE)
  if(NOT BITSERVE_GRPC_CPP_PLUGIN)
    get_target_property(BITSERVE_GRPC_CPP_PLUGIN gRPC::grpc_cpp_plugin LOCATION)
  endif()
else()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(BITSERVE_PC_GRPCPP REQUIRED IMPORTED_TARGET grpc++)
  find_library(BITSERVE_GRPCPP_REFLECTION_LIBRARY grpc++_reflection REQUIRED)
  set(BITSERVE_GRPCPP PkgConfig::BITSERVE_PC_GRPCPP)
  set(BITSERVE_GRPCPP_REFLECTION ${BITSERVE_GRPCPP_REFLECTION_LIBRARY})
  find_program(BITSERVE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
endif()
message(STATUS "bitserve: gRPC C++ plugin ${BITSERVE_GRPC_CPP_PLUGIN}, protoc ${Protobuf_PROTOC_EXECUTABLE}")

# Generated code goes to <build>/rpc/proto and is included as "bitserve/v1/bitserve.pb.h".
set(BITSERVE_PROTO_SRC_DIR ${CMAKE_CURRENT_SOURCE_DIR}/proto)
set(BITSERVE_PROTO_OUT_DIR ${CMAKE_CURRENT_BINARY_DIR}/proto)
set(BITSERVE_PROTO_SRCS)
foreach(proto bitserve/v1/bitserve bitserve/internal/worker)
  set(out ${BITSERVE_PROTO_OUT_DIR}/${proto})
  add_custom_command(
    OUTPUT ${out}.pb.cc ${out}.pb.h ${out}.grpc.pb.cc ${out}.grpc.pb.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${BITSERVE_PROTO_OUT_DIR}
    COMMAND ${Protobuf_PROTOC_EXECUTABLE}
            -I ${BITSERVE_PROTO_SRC_DIR}
            --cpp_out=${BITSERVE_PROTO_OUT_DIR}
            --grpc_out=${BITSERVE_PROTO_OUT_DIR}
            --plugin=protoc-gen-grpc=${BITSERVE_GRPC_CPP_PLUGIN}
            ${BITSERVE_PROTO_SRC_DIR}/${proto}.proto
    DEPENDS ${BITSERVE_PROTO_SRC_DIR}/${proto}.proto
    COMMENT "protoc ${proto}.proto"
    VERBATIM)
  list(APPEND BITSERVE_PROTO_SRCS ${out}.pb.cc ${out}.grpc.pb.cc)
endforeach()

# TLS files of both APIs and the worker link: gRPC credentials, and the HTTP API's certificate that
# follows its files.
add_library(bitserve_tls STATIC tls.cc tls_reload.cc)
target_link_libraries(bitserve_tls PUBLIC bitserve_base absl::status absl::statusor absl::strings
                      ${BITSERVE_GRPCPP} OpenSSL::SSL OpenSSL::Crypto)

# The generated messages and stubs, and their conversion to the C++ types of
# rpc/generation_backend.h (validation included), shared by the service and the client.
add_library(bitserve_rpc_proto STATIC ${BITSERVE_PROTO_SRCS} api_conversion.cc)
target_include_directories(bitserve_rpc_proto SYSTEM PUBLIC ${BITSERVE_PROTO_OUT_DIR})
target_link_libraries(bitserve_rpc_proto PUBLIC bitserve_engine bitserve_text bitserve_options
                      protobuf::libprotobuf ${BITSERVE_GRPCPP} bitserve_tls)

add_library(bitserve_rpc_service STATIC generation_service.cc grpc_server.cc request_bytes.cc)
target_link_libraries(bitserve_rpc_service PUBLIC bitserve_rpc_proto bitserve_metrics
                      ${BITSERVE_GRPCPP_REFLECTION})

add_library(bitserve_rpc_client STATIC client.cc)
target_link_libraries(bitserve_rpc_client PUBLIC bitserve_rpc_proto)

bitserve_add_test(generation_service_test
  SRCS generation_service_test.cc
  DEPS bitserve_rpc_service bitserve_rpc_client
  LABELS unit)

# The same in front of the real coordinator (its target comes from coordinator.cmake).
if(TARGET bitserve_rpc_coordinator)
  bitserve_add_test(generation_service_coordinator_test
    SRCS generation_service_coordinator_test.cc
    DEPS bitserve_rpc_service bitserve_rpc_client bitserve_rpc_coordinator bitserve_generation
    LABELS unit)
endif()

# End to end with a client that is not ours: Debian's python3-grpcio (stubs generated from our
# protos at test time) against `bitserve` processes. The bitserve target is defined later (tools/),
# so it is named by generator expression only.
function(bitserve_add_python_grpc_test name timeout)
  add_test(NAME ${name}
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/${name}.py
                   --bitserve $<TARGET_FILE:bitserve>
                   --proto-dir ${BITSERVE_PROTO_SRC_DIR}
                   --protoc ${Protobuf_PROTOC_EXECUTABLE}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES LABELS integration TIMEOUT ${timeout})
endfunction()

# The public API against `bitserve serve`.
bitserve_add_python_grpc_test(grpc_python_test 600)
