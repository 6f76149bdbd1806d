# The libFuzzer targets (tests/fuzz/README.md), included by the top CMakeLists.txt in a
# -DFM_FUZZ=ON build (clang; the libraries are then compiled with coverage instrumentation,
# ASan and UBSan), which builds nothing else. One target per decoder of untrusted bytes:
#   fuzz_wire         fm_wire_peek and every fm_wire_decode_* (+ the tensor checks)
#   fuzz_cfg          fm_cfg_parse (the config reader)
#   fuzz_idx          fm_dataset_load (the IDX reader, raw and gzip)
#   fuzz_safetensors  fm_safetensors_open and fm_safetensors_load_model
#   fuzz_ckpt         fm_ckpt_record_decode (one stored checkpoint record)
# Each is a ctest fuzz_<name> (tests/fuzz/run.sh: the seeds, then FM_FUZZ_SECONDS of
# fuzzing); fuzz_corpus runs the seed generator and checks that what it writes is valid.
set(FM_FUZZ_TARGETS wire cfg idx safetensors ckpt)
foreach(t ${FM_FUZZ_TARGETS})
  add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c)
  if(t STREQUAL "idx" OR t STREQUAL "safetensors")
    target_link_libraries(fuzz_${t} PRIVATE fm_learn) # the training core alone
  else()
    target_link_libraries(fuzz_${t} PRIVATE fedmq)
  endif()
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
  add_test(NAME fuzz_${t}
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/run.sh $<TARGET_FILE:fuzz_${t}>
                   ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t} ${CMAKE_BINARY_DIR}/fuzz/${t})
  # bounded by run.sh (FM_FUZZ_SECONDS + 300 s at most); this is only the backstop, large
  # enough for FM_FUZZ_SECONDS=3600 runs through ctest
  set_tests_properties(fuzz_${t} PROPERTIES TIMEOUT 4000)
endforeach()

# the seed generator (an ordinary program, built with the same flags)
add_executable(fuzz_gen_corpus ${CMAKE_SOURCE_DIR}/tests/fuzz/gen_corpus.c)
target_link_libraries(fuzz_gen_corpus PRIVATE fedmq)
add_test(NAME fuzz_corpus
         COMMAND bash ${CMAKE_SOURCE_DIR}/tests/fuzz/check_corpus.sh
                 $<TARGET_FILE:fuzz_gen_corpus> ${CMAKE_SOURCE_DIR}
                 ${CMAKE_BINARY_DIR}/fuzz/corpus-fresh ${CMAKE_BINARY_DIR})
set_tests_properties(fuzz_corpus PROPERTIES TIMEOUT 120)
