package org.tornadoswitch.tornado;

import uk.ac.manchester.tornado.api.AccessorParameters;
import uk.ac.manchester.tornado.api.TornadoTaskGraphInterface;
import uk.ac.manchester.tornado.api.common.Access;
import uk.ac.manchester.tornado.api.common.TaskPackage;
import uk.ac.manchester.tornado.runtime.tasks.PrebuiltTask;
import uk.ac.manchester.tornado.runtime.tasks.meta.ScheduleContext;

/**
 * Adds prebuilt tasks to a task graph in a way that works in graphs of more than one task.
 *
 * <p>TornadoVM 5.2's {@code PrebuiltTask.equals} is true only for a {@code CompilableTask} of the same id,
 * so a prebuilt task is never equal to itself. The interpreter finds a task's compiled kernel with
 * {@code localTaskList.indexOf(task)} and falls back to slot 0 when that gives -1 (TornadoVMInterpreter
 * globalToLocalTaskIndex): every prebuilt task of a graph then runs the kernel of the graph's first
 * task (clSetKernelArg errors, crashes, or wrong results). TornadoVM's own tests use one task per graph.
 *
 * <p>So this adds the task's package the way {@code TaskGraph.prebuiltTask} does (the graph's task
 * package list decides, among others, whether its grids apply), and then the task itself as a
 * PrebuiltTask whose equals is by id. The first step goes through the graph's {@code addTask}, which
 * records the package and then fails, before it adds any task, on the prebuilt package's missing
 * method reference (a NullPointerException, caught here); anything else is an error.
 */
final class PrebuiltTasks {
    private PrebuiltTasks() {}

    /** A PrebuiltTask that equals itself (and any prebuilt task of the same id). */
    static final class Task extends PrebuiltTask {
        Task(ScheduleContext meta, String id, String entryPoint, String filename, Object[] args, Access[] access) {
            super(meta, id, entryPoint, filename, args, access);
        }

        @Override
        public boolean equals(Object obj) {
            return this == obj || (obj instanceof PrebuiltTask p && getId().equals(p.getId()));
        }

        @Override
        public int hashCode() {
            return getId().hashCode();
        }
    }

    /** Adds task {@code name} of graph impl as prebuilt from file, with these arguments and accesses. */
    static void add(TornadoTaskGraphInterface impl, String graphName, String name, String entryPoint, String file, Object[] args, Access[] accesses) {
        AccessorParameters ap = new AccessorParameters(args.length);
        for (int i = 0; i < args.length; i++) ap.set(i, args[i], accesses[i]);
        TaskPackage pkg = TaskPackage.createPrebuiltTask(name, entryPoint, file, ap);
        String id = graphName + "." + name;
        if (impl.getTask(id) != null) throw new IllegalStateException("task " + id + " added twice");
        try {
            impl.addTask(pkg);
            throw new IllegalStateException("TornadoVM accepted a prebuilt package as a Java task: this is not the TornadoVM 5.2 the kernel cache knows");
        } catch (NullPointerException expected) {
            // the package is recorded; no task was added
        }
        if (impl.getTask(id) != null) throw new IllegalStateException("TornadoVM added a task for " + id + " from a prebuilt package");
        impl.addInner(new Task((ScheduleContext) impl.meta(), name, entryPoint, file, args, accesses));
        if (impl.getTask(id) == null) throw new IllegalStateException("prebuilt task " + id + " was not added");
    }
}
