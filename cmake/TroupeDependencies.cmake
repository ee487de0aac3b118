# Every dependency is found here, from Debian 12 packages (or the same packages unpacked into a
# prefix on the GPU host, see scripts/gpu-host.sh). Nothing is vendored or downloaded.
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)
find_package(Protobuf REQUIRED)          # must precede ONNX: its package file needs protobuf::libprotobuf
find_package(ONNX REQUIRED)              # targets onnx, onnx_proto
find_package(dnnl REQUIRED)              # oneDNN 2.6, target DNNL::dnnl
find_package(ZLIB REQUIRED)              # .npz inflate/deflate

# Command line and logs.
find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
add_library(troupe_cli11 INTERFACE)
target_include_directories(troupe_cli11 SYSTEM INTERFACE ${CLI11_INCLUDE_DIR})
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)

# CUDA: optional. The toolkit lives in /usr/local/cuda on both the CPU machine and the GPU host.
set(TROUPE_HAVE_CUDA OFF)
if(TROUPE_ENABLE_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper machine code plus PTX so that it still loads on other GPUs.
      set(CMAKE_CUDA_ARCHITECTURES 90-real 90-virtual)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
    find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
    if(CUDNN_LIBRARY AND CUDNN_INCLUDE_DIR)
      set(TROUPE_HAVE_CUDA ON)
      set(CMAKE_CUDA_STANDARD 20)
      message(STATUS "troupe: CUDA backend ON (${CMAKE_CUDA_COMPILER}, cuDNN ${CUDNN_LIBRARY})")
    else()
      message(STATUS "troupe: nvcc found but cuDNN missing, CUDA backend OFF")
    endif()
  else()
    message(STATUS "troupe: no nvcc, CUDA backend OFF")
  endif()
endif()

# Serving (proto/, actors/, cluster/): CAF 0.17 (Debian ships no CMake package for it), ZeroMQ +
# cppzmq, prometheus-cpp, nlohmann-json, Boost.Beast/Asio (header-only: the KServe HTTP door and
# /metrics). TROUPE_HAVE_SERVING is ON when all of them are found; the serving directories are
# skipped otherwise, so the runtime still builds without them.
find_path(CAF_INCLUDE_DIR caf/all.hpp)
find_library(CAF_CORE_LIBRARY caf_core)
find_library(CAF_IO_LIBRARY caf_io)
find_path(ZMQ_INCLUDE_DIR zmq.hpp)  # cppzmq's header; zmq.h sits beside it
find_library(ZMQ_LIBRARY zmq)
find_package(prometheus-cpp CONFIG QUIET)
find_package(nlohmann_json CONFIG QUIET)
find_package(Boost 1.74 CONFIG QUIET)  # Boost::headers
find_package(OpenSSL QUIET COMPONENTS Crypto)  # SHA-256 of model files sent to worker nodes
set(TROUPE_HAVE_SERVING OFF)
if(CAF_INCLUDE_DIR AND CAF_CORE_LIBRARY AND CAF_IO_LIBRARY AND ZMQ_INCLUDE_DIR AND ZMQ_LIBRARY
   AND prometheus-cpp_FOUND AND nlohmann_json_FOUND AND Boost_FOUND AND OpenSSL_FOUND)
  set(TROUPE_HAVE_SERVING ON)
  add_library(troupe_caf INTERFACE)
  target_include_directories(troupe_caf SYSTEM INTERFACE ${CAF_INCLUDE_DIR})
  target_link_libraries(troupe_caf INTERFACE ${CAF_CORE_LIBRARY} ${CAF_IO_LIBRARY} Threads::Threads)
  add_library(troupe_zmq INTERFACE)
  target_include_directories(troupe_zmq SYSTEM INTERFACE ${ZMQ_INCLUDE_DIR})
  target_link_libraries(troupe_zmq INTERFACE ${ZMQ_LIBRARY})
  message(STATUS "troupe: serving ON (CAF ${CAF_CORE_LIBRARY}, ZeroMQ ${ZMQ_LIBRARY})")
else()
  message(STATUS "troupe: CAF, ZeroMQ, prometheus-cpp, nlohmann-json, Boost or OpenSSL missing, serving OFF")
endif()

# KServe gRPC door: libgrpc++ (its CMake package, which honours CMAKE_PREFIX_PATH) and protoc's
# grpc_cpp_plugin. Optional: without them the node serves no gRPC (the KServe protobuf messages and
# their codec still build, with protoc alone).
set(TROUPE_HAVE_GRPC OFF)
if(TROUPE_HAVE_SERVING)
  find_package(gRPC CONFIG QUIET)
  find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin)
  if(gRPC_FOUND AND GRPC_CPP_PLUGIN)
    set(TROUPE_HAVE_GRPC ON)
    message(STATUS "troupe: KServe gRPC ON (gRPC ${gRPC_VERSION}, ${GRPC_CPP_PLUGIN})")
  else()
    message(STATUS "troupe: libgrpc++ or grpc_cpp_plugin missing, KServe gRPC OFF")
  endif()
endif()
