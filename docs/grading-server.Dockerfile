# A container for grading a class with course-grade (see docs/grading.md, "A shared grading server").
# Run it with --security-opt seccomp=unconfined so that bubblewrap may create user namespaces.
FROM python:3.11-slim
WORKDIR /course
COPY . /course
RUN pip install --no-cache-dir -e . && useradd --create-home grader
USER grader
ENTRYPOINT ["course-grade"]
