"""Find: from "this model leaks in stage S" to the smallest regions that do, with inferred inputs."""
