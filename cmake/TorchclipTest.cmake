# torchclip_add_test(NAME LABEL SOURCES...): one GoogleTest executable whose tests are registered
# with CTest under LABEL (unit, golden or integration), as flashlight's TestUtils does.
include(GoogleTest)
function(torchclip_add_test name label)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE torchclip_core torchclip_warnings GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    TORCHCLIP_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    TORCHCLIP_BINARY="$<TARGET_FILE:torchclip>")
  if(TORCHCLIP_PCH)
    target_precompile_headers(${name} REUSE_FROM torchclip_model)
  endif()
  gtest_discover_tests(${name} PROPERTIES LABELS ${label} DISCOVERY_TIMEOUT 60)
endfunction()
